"""The failure message of the ``airflow`` CLI helper: the first error of the log, not only its last lines."""

from __future__ import annotations

from testing.airflow_cli import first_error

TASK_LOG = """\
2026-12-06 19:51:58 [info     ] Task started                   [task]
2026-12-06 19:51:58 [error    ] Unable to retrieve connection from secrets backend (EnvironmentVariablesBackend). [task]
Traceback (most recent call last):
  File "/venv/airflow/models/crypto.py", line 88, in get_fernet
    _fernet.is_encrypted = True
AttributeError: 'cryptography.hazmat.bindings._rust.fernet.MultiFernet' object has no attribute
'is_encrypted'
2026-12-06 19:51:58 [error    ] Connection not found           [airflow.sdk.api.client] conn_id=milvus_default
2026-12-06 19:51:58 [error    ] Task failed with exception     [task]
Traceback (most recent call last):
  File "/venv/airflow/sdk/execution_time/task_runner.py", line 917, in run
airflow.exceptions.AirflowNotFoundException: The conn_id `milvus_default` isn't defined
"""


def test_the_first_error_is_reported_with_its_exception_not_the_last_one():
    reported = first_error(TASK_LOG)
    assert reported.splitlines()[0].endswith(
        "Unable to retrieve connection from secrets backend (EnvironmentVariablesBackend). [task]"
    )
    assert "AttributeError: 'cryptography.hazmat.bindings._rust.fernet.MultiFernet' object" in reported
    assert reported.endswith("'is_encrypted'")
    assert "AirflowNotFoundException" not in reported


def test_colour_codes_of_rich_tracebacks_are_removed():
    coloured = "\x1b[31m2026-12-06 [error    ] boom\x1b[0m\nTraceback (most recent call last):\n\x1b[1;91mValueError: \x1b[0mbad"
    assert first_error(coloured) == "2026-12-06 [error    ] boom\nTraceback (most recent call last):\nValueError: bad"


def test_an_error_line_without_a_traceback_is_reported_alone():
    assert first_error("x [info ] fine\ny [error    ] DagRun failed\nz [info ] done\n") == "y [error    ] DagRun failed"


def test_output_without_errors_says_so():
    assert first_error("2026 [info     ] all good\n") == "(no error line in the output)"
