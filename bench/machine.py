"""A one-look description of the machine, versions and settings, for the results header."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil

PACKAGES = (
    "langchain-core",
    "apache-airflow",
    "langchain-milvus",
    "pymilvus",
    "milvus-lite",
    "langchain-openai",
    "openai",
    "httpx",
    "grpcio",
)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def describe_commit() -> str:
    """HEAD, plus which of the measured paths had uncommitted changes when the run started."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            ).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    status = git("status", "--porcelain", "--", "airflow_provider_milvus", "bench", "dags").splitlines()
    dirty = [line[3:] for line in status if line[3:].endswith(".py")]
    return head + (f" + uncommitted changes in {', '.join(sorted(dirty))}" if dirty else "")


def describe_machine(
    args: Any, backend: Any, embeddings: Any, tuning: Any, *, commit: str, load_at_start: str
) -> dict[str, str]:
    return {
        "command": " ".join(["python -m bench.run_benchmark", *os.sys.argv[1:]]),
        "commit": commit,
        "load average (1/5/15 min) at start / end": f"{load_at_start} / {load_average()} (2 cores shared with other work)",
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        "backend": backend.description,
        "embeddings": f"testing.servers.embeddings_server in a child process, {embeddings.dimensions} dims, "
        f"latency {embeddings.latency}s/request + {embeddings.latency_per_input}s/input",
        "operator tuning": tuning.describe() + f"; search over 100k: batch_size={args.big_search_batch_size}",
        "repetitions": f"{args.repeat} below 100k items (median), 1 at 100k; sync loop once",
    }
