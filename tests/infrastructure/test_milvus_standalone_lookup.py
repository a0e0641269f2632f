"""The tests look for the Milvus standalone server where scripts/install_milvus_standalone.sh put it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from testing.servers import milvus_standalone

if TYPE_CHECKING:
    import pytest


def _fake_server(venv: Path) -> Path:
    server = venv / "bin" / "milvus-server"
    server.parent.mkdir(parents=True)
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    return server


def test_milvus_standalone_venv_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _fake_server(tmp_path / "elsewhere")
    monkeypatch.delenv("MILVUS_STANDALONE_BIN", raising=False)
    monkeypatch.setenv("MILVUS_STANDALONE_VENV", str(tmp_path / "elsewhere"))
    assert milvus_standalone.find_milvus_server_executable() == str(server)


def test_a_named_venv_without_the_server_does_not_fall_back_to_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_server(tmp_path / "default")
    monkeypatch.setattr(milvus_standalone, "DEFAULT_VENV", tmp_path / "default")
    monkeypatch.delenv("MILVUS_STANDALONE_BIN", raising=False)
    monkeypatch.setenv("MILVUS_STANDALONE_VENV", str(tmp_path / "empty"))
    assert milvus_standalone.find_milvus_server_executable() is None
    monkeypatch.delenv("MILVUS_STANDALONE_VENV")
    assert milvus_standalone.find_milvus_server_executable() == str(tmp_path / "default" / "bin" / "milvus-server")


def test_milvus_standalone_bin_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _fake_server(tmp_path / "bin-venv")
    monkeypatch.setenv("MILVUS_STANDALONE_VENV", str(tmp_path / "other"))
    monkeypatch.setenv("MILVUS_STANDALONE_BIN", str(server))
    assert os.access(milvus_standalone.find_milvus_server_executable() or "", os.X_OK)
    assert milvus_standalone.find_milvus_server_executable() == str(server)
