"""Re-resolve the locks the test environments install from (``locks/``) to the newest versions allowed.

The package's own dependency ranges in ``pyproject.toml`` stay ranges; these locks pin every package of each test
environment so that a fresh clone installs, on any day, the versions the suite last passed with.

- ``locks/test.txt``: the main tier, ``.[test]`` at the newest versions ``pyproject.toml`` allows.
- ``locks/main.txt``: the main job, ``.`` alone, at the same versions as ``locks/test.txt``.
- ``locks/test-min-airflow.txt``: the minimum tier, ``.[test-core]`` with the oldest Airflow ``pyproject.toml``
  allows. Airflow publishes its constraints by resolving every dependency to the newest release on the day it
  releases; this resolves Airflow alone the same way (nothing uploaded after that release's wheel), then adds this
  package's own stack, keeping those versions wherever the stack allows.

Run by ``bash scripts/upgrade_locks.sh`` (re-resolve, then the whole suite); commit the new locks with its verdict.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "locks"
PYTHON_VERSION = "3.11"


def uv(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("uv")), "pip", "compile", "--quiet", "--universal"]
    command += ["--python-version", PYTHON_VERSION, "--no-header", "--no-annotate", *args]
    subprocess.run(command, check=True, cwd=REPO)


def airflow_floor() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in dependencies:
        match = re.fullmatch(r"apache-airflow>=([\w.]+)(,.*)?", requirement.replace(" ", ""))
        if match:
            return match.group(1)
    raise SystemExit("pyproject.toml has no `apache-airflow>=X` floor")


def release_time(package: str, version: str) -> str:
    """The upload time of ``package==version``'s first file on PyPI (the simple API's JSON form)."""
    request = urllib.request.Request(
        f"https://pypi.org/simple/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    prefix = f"{package.replace('-', '_')}-{version}"
    times = [f["upload-time"] for f in files if f["filename"].startswith((f"{prefix}-", f"{prefix}.tar"))]
    if not times:
        raise SystemExit(f"{package}=={version} has no files on PyPI")
    return max(times)


def write(lock: Path, header: str, body: Path) -> None:
    lock.write_text(f"# {header}\n# Written by `python scripts/lock.py`; do not edit by hand.\n" + body.read_text())
    print(f"wrote {lock.relative_to(REPO)}")


def main() -> None:
    LOCKS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        test = work / "test.txt"
        uv("pyproject.toml", "--extra", "test", "-o", str(test))
        write(LOCKS / "test.txt", "Main test tier: pip install -e '.[test]' at these versions.", test)

        main_job = work / "main.txt"
        uv("pyproject.toml", "-c", str(test), "-o", str(main_job))
        write(LOCKS / "main.txt", "Main job: pip install -e . at the main tier's versions.", main_job)

        floor = airflow_floor()
        released = release_time("apache-airflow", floor)
        airflow = work / "airflow.in"
        airflow.write_text(f"apache-airflow=={floor}\n")
        minimum = work / "test-min-airflow.txt"
        # The first pass is Airflow's own constraints as of its release; as the existing output file, it is the
        # preference the second pass keeps wherever this package's stack allows.
        uv(str(airflow), "--exclude-newer", released, "-o", str(minimum))
        uv("pyproject.toml", str(airflow), "--extra", "test-core", "-o", str(minimum))
        write(
            LOCKS / "test-min-airflow.txt",
            f"Minimum tier: apache-airflow=={floor} with its dependencies as of its release ({released}), then "
            "'.[test-core]'.",
            minimum,
        )
    shutil.rmtree(REPO / "build", ignore_errors=True)


if __name__ == "__main__":
    main()
