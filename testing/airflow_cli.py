"""Run the real ``airflow`` CLI against a real metadata DB in a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_START = re.compile(r"\[error\s*\]| ERROR - |^Traceback \(most recent call last\)")
TRACEBACK_START = re.compile(r"Traceback.*\(most recent call last\)")
# The exception line that ends a traceback, at column 0: "AttributeError: ...", "airflow.exceptions.AirflowException: ..."
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|NotFound\w*|Timeout\w*)\b:?")
TRACEBACK_TAIL_LINES = 40


def first_error(output: str) -> str:
    """The first error of an Airflow log: its log line, the end of its traceback and the exception it raised.

    ``airflow dags test`` prints the task log inline; when a task fails, its last lines name only the consequence
    (a missing connection, a failed run), and the cause is the first error logged, often thousands of lines earlier.
    """
    lines = ANSI_ESCAPE.sub("", output).splitlines()
    start = next((i for i, line in enumerate(lines) if ERROR_START.search(line)), None)
    if start is None:
        return "(no error line in the output)"
    traceback = next((i for i in range(start, min(start + 3, len(lines))) if TRACEBACK_START.search(lines[i])), None)
    if traceback is None:
        return lines[start]
    end = next((i for i in range(traceback + 1, len(lines)) if EXCEPTION_LINE.match(lines[i])), None)
    if end is None:
        return "\n".join(lines[start : start + TRACEBACK_TAIL_LINES])
    # The exception's message may wrap onto the next lines, up to the next log line.
    stop = next((i for i in range(end + 1, len(lines)) if not lines[i].strip() or lines[i][:1].isdigit()), len(lines))
    body = lines[max(traceback, end - TRACEBACK_TAIL_LINES) : end]
    return "\n".join(
        [lines[start], *(["..."] if end - TRACEBACK_TAIL_LINES > traceback else []), *body, *lines[end:stop]]
    )


@dataclass
class AirflowCLI:
    home: Path
    dags_folder: Path
    env_overrides: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]),
            }
        )
        env.update(self.env_overrides)
        env.update(extra)
        return env

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,  # a failure is raised below with both outputs
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {result.returncode}\n"
                f"--- first error ---\n{first_error(result.stdout + chr(10) + result.stderr)}\n"
                f"--- stdout (end) ---\n{result.stdout[-6000:]}\n--- stderr (end) ---\n{result.stderr[-6000:]}"
            )
        return result

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.run("db", "migrate", timeout=300)
