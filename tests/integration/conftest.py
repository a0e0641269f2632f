"""Integration-tier fixtures shared across modules (one instance per session, not one per importing module)."""
from __future__ import annotations

from tests.integration.multihost import multihost  # noqa: F401 - the multi-host deployment (two triggerers, S3 staging)
