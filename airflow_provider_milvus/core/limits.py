"""
Milvus's per-request caps this package stays within, one name per cap.

The three caps happen to share a value (Milvus's ``quotaAndLimits`` defaults) but not a meaning:
changing one on a server does not change the others. Milvus Lite enforces none of them.
"""

from __future__ import annotations

# Rows one query returns at most (offset + limit, ``queryNode.maxQueryResultWindow``): a query that
# returns exactly this many may have been cut short, so callers page past it.
MAX_QUERY_ROWS = 16384
# Hits one search returns per query vector (its ``limit``, a.k.a. topk).
MAX_TOP_K = 16384
# Query vectors in one search request (nq).
MAX_NQ = 16384
