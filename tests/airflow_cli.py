"""Run the real ``airflow`` CLI against a real metadata DB in a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


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
                f"airflow {' '.join(args)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}"
                f"\n--- stderr ---\n{result.stderr[-6000:]}"
            )
        return result

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.run("db", "migrate", timeout=300)
