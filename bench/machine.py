"""A one-look description of the machine, versions and settings, for the results header."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil

PACKAGES = ("apache-airflow", "langchain-milvus", "pymilvus", "milvus-lite", "langchain-openai", "openai",
            "httpx", "grpcio")


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


def describe_machine(args: Any, backend: Any, embeddings: Any, tuning: Any) -> dict[str, str]:
    return {
        "command": " ".join(["python -m bench.run_benchmark", *os.sys.argv[1:]]),
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        "backend": backend.description,
        "embeddings": f"tests.servers.embeddings_server in a child process, {embeddings.dimensions} dims, "
                      f"latency {embeddings.latency}s/request + {embeddings.latency_per_input}s/input",
        "operator tuning": tuning.describe(),
        "repetitions": f"{args.repeat} below 100k items (median), 1 at 100k; sync loop once",
    }
