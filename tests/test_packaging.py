"""The package as users get it: build the sdist and wheel, install the wheel into a clean virtualenv, use it.

The clean virtualenv has no access to this checkout (no editable install, no PYTHONPATH, cwd elsewhere). It is made
with uv, which installs Airflow and its ~300 dependencies in seconds (8 s with a cold cache here) where pip took
5 minutes on a loaded 2-core machine; the versions are pinned to the ones this test environment runs (``pip freeze``
as constraints), while the wheel's own dependency list still decides *what* gets installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import airflow_provider_milvus

REPO = Path(__file__).resolve().parents[1]


def sh(*args: str | Path, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--outdir", out, REPO, timeout=600)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_one_version_everywhere(dist):
    version = airflow_provider_milvus.__version__
    assert dist["wheel"].name == f"airflow_provider_milvus-{version}-py3-none-any.whl"
    assert dist["sdist"].name == f"airflow_provider_milvus-{version}.tar.gz"
    from airflow_provider_milvus.get_provider_info import get_provider_info

    assert get_provider_info()["versions"] == [version]


def test_the_sdist_carries_the_package_license_and_changelog_but_no_tests(dist):
    with tarfile.open(dist["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "airflow_provider_milvus/py.typed"} <= names
    assert "airflow_provider_milvus/version_compat.py" in names
    for unwanted in ("tests/", "testing/", "bench/", "scripts/", "dags/", "docs/", "docker/", ".ci/"):
        assert not [n for n in names if n.startswith(unwanted)], unwanted


def test_the_wheel_carries_only_the_package(dist):
    with zipfile.ZipFile(dist["wheel"]) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {n.split("/", 1)[0] for n in names} == {
        "airflow_provider_milvus",
        f"airflow_provider_milvus-{airflow_provider_milvus.__version__}.dist-info",
    }
    assert "airflow_provider_milvus/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Dist: apache-airflow<4,>=3.0.6" in metadata
    assert "apache_airflow_provider" in entry_points


CHECKS = textwrap.dedent(
    """
    import json, sys
    import airflow_provider_milvus
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2+
    except ImportError:
        from airflow.models.dagbag import DagBag
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    # What the api-server's /ui/connections/hook_meta endpoint serves to the connection form.
    (milvus,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "milvus"]
    bag = DagBag(dag_folder=sys.argv[1])  # AIRFLOW__CORE__LOAD_EXAMPLES=False: only these DAGs
    print(json.dumps({
        "package_file": airflow_provider_milvus.__file__,
        "hook_class_name": milvus.hook_class_name,
        "extra_fields": sorted(milvus.extra_fields or {}),
        "standard_fields": milvus.standard_fields.model_dump(mode="json") if milvus.standard_fields else None,
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    }))
    """
)


@pytest.fixture(scope="module")
def clean_venv(dist, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    uv = Path(sys.executable).with_name("uv")
    sh(uv, "venv", "--quiet", "--python", sys.executable, venv)
    constraints = root / "constraints.txt"
    frozen = sh(uv, "pip", "freeze", "--python", sys.executable, "--exclude-editable").stdout
    constraints.write_text("\n".join(line for line in frozen.splitlines() if "airflow-provider-milvus" not in line))
    sh(uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "-c", constraints, dist["wheel"],
       cwd=root, timeout=1200)  # fmt: skip
    return venv


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })  # fmt: skip
    return env


def test_the_installed_wheel_registers_serves_its_connection_form_and_loads_the_example_dags(clean_venv, tmp_path):
    env = clean_env(tmp_path / "airflow-home")
    listed = sh(clean_venv / "bin" / "airflow", "providers", "list", "-o", "json", env=env, cwd=tmp_path).stdout
    providers = json.loads(listed[listed.index("[") :])
    (ours,) = [p for p in providers if p["package_name"] == "airflow-provider-milvus"]
    assert ours["version"] == airflow_provider_milvus.__version__

    out = sh(clean_venv / "bin" / "python", "-c", CHECKS, REPO / "dags", env=env, cwd=tmp_path).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["package_file"].startswith(str(clean_venv)), "imported from the checkout, not the wheel"
    assert report["hook_class_name"] == "airflow_provider_milvus.hooks.milvus.MilvusHook"
    assert {"db_name", "secure", "timeout", "embedding_conn_id", "embedding_model"} <= {
        name.rsplit("__", 1)[-1] for name in report["extra_fields"]
    }
    assert report["standard_fields"]["host"]["title"] == "URI"
    assert report["import_errors"] == {}
    assert {"milvus_nightly_ingest", "milvus_search", "milvus_retention_cleanup"} <= set(report["dag_ids"])
