"""The example DAG ``dags/milvus_sharded_ingest.py`` as shipped, for tests/integration/test_sharded_ingest.py.

One change, made on the example's own DAG object: its tasks retry after 1 s instead of 30 s (the test
kills a shard's task process and waits for Airflow's retry). The deployment runs triggered runs only
(``[scheduler] use_job_schedule = False``), so the example's ``@daily`` schedule starts nothing.
"""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "dags" / "milvus_sharded_ingest.py"

dag = runpy.run_path(str(EXAMPLE), run_name="milvus_sharded_ingest_example")["dag"]
for task in dag.tasks:
    task.retry_delay = timedelta(seconds=1)
