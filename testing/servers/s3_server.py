"""A real S3-compatible HTTP endpoint on loopback (moto's standalone server) for staging tests.

    with S3Server() as s3:
        s3.create_bucket("staging")
        s3.endpoint_url        # http://127.0.0.1:P
        s3.keys("staging")     # what is stored, read with boto3 (independently of Airflow)

moto keeps everything in the server process's memory; it checks signatures only loosely (any key id and
secret are accepted) but it speaks the S3 REST protocol over HTTP, so s3fs/aiobotocore/boto3 go through
their real request paths. Unknown buckets answer NoSuchBucket, as S3 does.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from testing.ports import PortTaken, port_taken, start_on_free_port

ACCESS_KEY = "staging-test-access-key"
SECRET_KEY = "staging-test-secret-key"  # moto accepts any; a real key would never be in a repo
REGION = "us-east-1"


class S3Server:
    def __init__(self, *, log_path: Path | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0  # chosen by start()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60) -> S3Server:
        """Start moto's server on a free port (another one if the port is taken before moto binds it)."""
        return start_on_free_port(lambda port: self._start_on(port, timeout), host=self.host)

    def _start_on(self, port: int, timeout: float) -> S3Server:
        self.port = port
        log_path = self.log_path or Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
        start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = log_path.read_bytes()[start:].decode(errors="replace")
                if port_taken(output):
                    raise PortTaken(f"moto server: port {self.port} taken")
                raise RuntimeError(f"moto server exited with {self.process.returncode}: {output[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            if self.process.poll() is None:  # ours still runs: it bound the port (a taker would have made it exit)
                return self
        self.stop()
        raise RuntimeError(f"moto server not answering on {self.endpoint_url} after {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- an independent client (boto3), to create buckets and read what is stored --------------
    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])
        ]

    def put(self, bucket: str, key: str, body: bytes, **kwargs: Any) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body, **kwargs)

    def connection_json(self, **extra: Any) -> str:
        """``AIRFLOW_CONN_<ID>`` value of an ``aws`` connection to this server."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION, **extra},
            }
        )
