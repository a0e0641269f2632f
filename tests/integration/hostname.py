"""``[core] hostname_callable`` for integration stacks: each component can pose as its own host.

Set ``AIRFLOW__CORE__HOSTNAME_CALLABLE=tests.integration.hostname.hostname`` and ``IT_HOSTNAME=<name>``
in a component's environment; the name shows up in the ``job`` table (which triggerer runs what) and in
everything the provider records as "the host that staged this".
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("IT_HOSTNAME") or socket.getfqdn()
