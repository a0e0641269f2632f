"""Specification of the local Docker Compose stack (docker-compose.yml).

No container is started: these tests read the compose file and the Airflow
Dockerfile and check what the stack promises - which services exist, that
images are pinned, that start-up order waits for health checks, and that every
Airflow component is handed the same Milvus connection.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
AIRFLOW_DOCKERFILE = REPO_ROOT / "docker" / "airflow" / "Dockerfile"

MILVUS_SERVICES = {"etcd", "minio", "milvus"}
AIRFLOW_INIT = "airflow-init"
AIRFLOW_RUNTIME_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
AIRFLOW_SERVICES = AIRFLOW_RUNTIME_SERVICES | {AIRFLOW_INIT}
EXPECTED_SERVICES = MILVUS_SERVICES | {"postgres"} | AIRFLOW_SERVICES


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return env


def _depends_on(service: dict) -> dict:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _container_ports(service: dict) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _healthcheck_command(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


# --------------------------------------------------------------- structure --


def test_compose_file_is_a_yaml_mapping_with_services(compose):
    assert isinstance(compose, dict)
    assert isinstance(compose.get("services"), dict)


def test_compose_file_uses_the_versionless_compose_specification(compose):
    assert "version" not in compose


def test_stack_defines_milvus_postgres_and_all_airflow_components(services):
    assert EXPECTED_SERVICES <= set(services)


def test_every_image_is_pinned_to_an_explicit_non_latest_tag(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, sep, tag = image.rpartition(":")
        # A ':' inside a registry host:port is not a tag separator.
        assert sep and "/" not in tag, f"{name} image {image!r} has no tag"
        assert tag and tag != "latest", f"{name} image {image!r} is not pinned"


def test_named_volumes_used_by_services_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "$", "~")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


# ------------------------------------------------------------------ Milvus --


def test_milvus_is_a_pinned_standalone_2_5_or_2_6_release(services):
    milvus = services["milvus"]
    assert re.fullmatch(r"milvusdb/milvus:v2\.[56]\.\d+", milvus["image"])
    assert "standalone" in milvus["command"]


def test_milvus_healthcheck_probes_the_healthz_endpoint(services):
    command = _healthcheck_command(services["milvus"])
    assert "curl" in command and "-f" in command
    assert "http://localhost:9091/healthz" in command


def test_milvus_waits_for_healthy_etcd_and_minio(services):
    deps = _depends_on(services["milvus"])
    for dependency in ("etcd", "minio"):
        assert deps[dependency]["condition"] == "service_healthy"
        assert "healthcheck" in services[dependency]


def test_milvus_publishes_grpc_and_health_ports(services):
    assert {19530, 9091} <= _container_ports(services["milvus"])


def test_milvus_is_wired_to_the_etcd_and_minio_services(services):
    env = _environment(services["milvus"])
    assert env["ETCD_ENDPOINTS"] == "etcd:2379"
    assert env["MINIO_ADDRESS"] == "minio:9000"


def test_milvus_data_survives_container_restarts(services):
    targets = [v.split(":")[1] for v in services["milvus"]["volumes"]]
    assert "/var/lib/milvus" in targets


# ----------------------------------------------------------------- Airflow --


def test_postgres_metadata_db_has_a_readiness_healthcheck(services):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in _healthcheck_command(postgres)


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_runs_the_image_built_from_the_repo(services, name):
    build = services[name]["build"]
    assert (REPO_ROOT / build["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / build["dockerfile"]).resolve() == AIRFLOW_DOCKERFILE


def test_all_airflow_services_share_one_image(services):
    assert len({services[name]["image"] for name in AIRFLOW_SERVICES}) == 1


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_waits_for_a_healthy_postgres(services, name):
    assert _depends_on(services[name])["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(AIRFLOW_RUNTIME_SERVICES))
def test_airflow_runtime_service_waits_for_a_healthy_milvus(services, name):
    assert _depends_on(services[name])["milvus"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(AIRFLOW_RUNTIME_SERVICES))
def test_airflow_runtime_service_starts_after_a_successful_init(services, name):
    condition = _depends_on(services[name])[AIRFLOW_INIT]["condition"]
    assert condition == "service_completed_successfully"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("airflow-apiserver", "api-server"),
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-triggerer", "triggerer"),
    ],
)
def test_airflow_component_runs_its_airflow_3_command_with_a_healthcheck(
    services, name, command
):
    assert services[name]["command"] == command
    assert "healthcheck" in services[name]


def test_api_server_is_published_on_port_8080(services):
    assert 8080 in _container_ports(services["airflow-apiserver"])


def test_init_service_migrates_the_db_and_creates_an_admin_user(services):
    env = _environment(services[AIRFLOW_INIT])
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert "/entrypoint" in "".join(services[AIRFLOW_INIT]["command"])


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_uses_local_executor_and_postgres(services, name):
    env = _environment(services[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
        "postgresql+psycopg2://"
    )
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"


def test_airflow_components_share_jwt_secret_and_execution_api_url(services):
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        values = {_environment(services[name]).get(key) for name in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values, key
    url = urlparse(_environment(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.port, url.path) == ("airflow-apiserver", 8080, "/execution/")


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_gets_milvus_default_connection_pointing_at_milvus(
    services, name
):
    conn = json.loads(_environment(services[name])["AIRFLOW_CONN_MILVUS_DEFAULT"])
    assert conn["conn_type"] == "milvus"
    uri = urlparse(conn["host"])
    assert uri.scheme in {"http", "https"}
    assert uri.hostname == "milvus" and uri.hostname in services
    assert uri.port == 19530
    assert conn["extra"]["db_name"] == "default"


def test_airflow_parses_the_milvus_connection_env_var_into_uri_host(services):
    connection_module = pytest.importorskip("airflow.models.connection")
    raw = _environment(services["airflow-scheduler"])["AIRFLOW_CONN_MILVUS_DEFAULT"]
    conn = connection_module.Connection.from_json(raw, conn_id="milvus_default")
    assert conn.conn_type == "milvus"
    assert conn.host == "http://milvus:19530"
    assert conn.extra_dejson == {"db_name": "default"}


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_mounts_the_dags_folder_read_only(services, name):
    mounts = [v.split(":") for v in services[name]["volumes"] if isinstance(v, str)]
    dags = [m for m in mounts if m[1] == "/opt/airflow/dags"]
    assert dags, f"{name} does not mount the dags folder"
    source, _, mode = (dags[0] + [""])[:3]
    assert Path(source).as_posix() in {"dags", "./dags"}
    assert mode == "ro"


# -------------------------------------------------------------- Dockerfile --


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = AIRFLOW_DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_airflow_image_extends_the_official_airflow_3_3_image():
    froms = [rest for keyword, rest in _dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"apache/airflow:3\.3\.\d+(-python3\.\d+)?", froms[0])


def test_airflow_image_installs_the_repo_without_changing_airflow_version():
    runs = [rest for keyword, rest in _dockerfile_instructions() if keyword == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run]
    assert len(pip_runs) == 1
    pip_run = pip_runs[0]
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in pip_run
    # The repository (build context ".") is what gets installed.
    mount = re.search(r"--mount=type=bind,source=\.,target=(\S+?)(,|\s)", pip_run)
    assert mount, "the build context is not mounted into the pip step"
    assert pip_run.rstrip().endswith(mount.group(1))


def test_airflow_image_runs_pip_as_the_airflow_user():
    user = None
    for keyword, rest in _dockerfile_instructions():
        if keyword == "USER":
            user = rest
        if keyword == "RUN" and "pip install" in rest:
            assert user == "airflow"


# --------------------------------------------- optional: compose validation --


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_airflow_services_share_the_milvus_staging_location(compose):
    env = compose["x-airflow-common"]["environment"]
    staging = env["AIRFLOW__MILVUS__STAGING_URL"]
    assert staging.startswith("/opt/airflow/data/")
    assert any(str(v).endswith(":/opt/airflow/data") for v in compose["x-airflow-common"]["volumes"])
