"""Specification of the local Docker Compose stack (docker-compose.yml).

No container is started: these tests read the compose file and the Airflow
Dockerfile and check what the stack promises - which services exist, that
images are pinned, that start-up order waits for health checks, and that every
Airflow component is handed the same Milvus connection.
"""

from __future__ import annotations

import fnmatch
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
    assert set(services) >= EXPECTED_SERVICES


def test_every_image_is_pinned_to_an_explicit_non_latest_tag(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, sep, tag = image.rpartition(":")
        # A ':' inside a registry host:port is not a tag separator.
        assert sep, f"{name} image {image!r} has no tag"
        assert "/" not in tag, f"{name} image {image!r} has no tag"
        assert tag, f"{name} image {image!r} is not pinned"
        assert tag != "latest", f"{name} image {image!r} is not pinned"


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
    assert "curl" in command
    assert "-f" in command
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
def test_airflow_component_runs_its_airflow_3_command_with_a_healthcheck(services, name, command):
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
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"


def test_airflow_components_share_jwt_secret_and_execution_api_url(services):
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        values = {_environment(services[name]).get(key) for name in AIRFLOW_SERVICES}
        assert len(values) == 1, key
        assert None not in values, key
    url = urlparse(_environment(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.port, url.path) == ("airflow-apiserver", 8080, "/execution/")


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_gets_milvus_default_connection_pointing_at_milvus(services, name):
    conn = json.loads(_environment(services[name])["AIRFLOW_CONN_MILVUS_DEFAULT"])
    assert conn["conn_type"] == "milvus"
    uri = urlparse(conn["host"])
    assert uri.scheme in {"http", "https"}
    assert uri.hostname == "milvus"
    assert uri.hostname in services
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
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_airflow_image_extends_the_official_airflow_3_3_image():
    froms = [rest for keyword, rest in _dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"apache/airflow:3\.3\.\d+(-python3\.\d+)?", froms[0])


def _pip_run() -> str:
    runs = [rest for keyword, rest in _dockerfile_instructions() if keyword == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run]
    assert len(pip_runs) == 1
    return pip_runs[0]


def install_step_problems(instructions: list[tuple[str, str]]) -> list[str]:
    """Why the provider's ``pip install`` step would fail or leak, for a parsed Dockerfile ([] = fine).

    pip runs as the ``airflow`` user (uid 50000) and builds the package in the source directory, so
    the directory must be writable by that user. A BuildKit bind mount of the context is root-owned
    (``rw`` only makes writes disposable, not permitted), as is a ``COPY`` without ``--chown``: pip
    then fails with "could not create 'build': Permission denied". Working patterns: copy the mount
    to a fresh directory inside the same RUN and install that, or ``COPY --chown=airflow:0``.
    """
    problems: list[str] = []
    user, copied_with_chown, copies = "root", set(), {}
    for keyword, rest in instructions:
        if keyword == "USER":
            user = rest
        elif keyword == "COPY":
            *sources, target = rest.split()
            chown = any(s.startswith("--chown=airflow") or s.startswith("--chown=50000") for s in sources)
            copies[target.rstrip("/")] = chown
            if chown:
                copied_with_chown.add(target.rstrip("/"))
        elif keyword == "RUN" and "pip install" in rest:
            if user not in ("airflow", "50000"):
                problems.append(f"pip runs as {user!r}, not as the airflow user")
            if '"apache-airflow==${AIRFLOW_VERSION}"' not in rest:
                problems.append("pip may change the Airflow version (no apache-airflow==${AIRFLOW_VERSION} pin)")
            mount = re.search(r"--mount=type=bind,source=\.,target=(\S+?)(,|\s)", rest)
            command = rest[mount.end() :] if mount else rest
            install = re.search(
                r"pip install\s+(?:--\S+\s+)*\"apache-airflow==\$\{AIRFLOW_VERSION\}\"\s+(\S+)", command
            )
            if not install:
                problems.append("cannot find what pip installs")
                continue
            target = install.group(1).strip('"').rstrip("/")
            if mount:
                mount_target = mount.group(1).rstrip("/")
                if target == mount_target or target.startswith(mount_target + "/"):
                    problems.append("pip builds inside the root-owned bind mount of the build context")
                    continue
                variable = re.fullmatch(r"\$\{?(\w+)\}?", target)
                made = variable and re.search(rf"{variable.group(1)}=\"?\$\(mktemp -d\)", command)
                copied = re.search(rf"cp -r {re.escape(mount_target)}/?\.? \"?{re.escape(target)}", command)
                if not (made or target.startswith("/tmp")):
                    problems.append(f"{target} is not a fresh directory the airflow user owns")
                if not copied:
                    problems.append(f"the build context is not copied from {mount_target} to {target}")
                if not re.search(rf"pip install.*&& rm -rf \"?{re.escape(target)}", command):
                    problems.append(f"{target} is not removed in the same step (the source would stay in a layer)")
            elif target not in copied_with_chown:
                problems.append(f"{target} was not copied with --chown=airflow:0: pip cannot write into it")
    return problems


def test_airflow_image_installs_the_repo_without_changing_airflow_version():
    pip_run = _pip_run()
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in pip_run
    assert install_step_problems(_dockerfile_instructions()) == []


BROKEN_BIND_MOUNT = """
FROM apache/airflow:3.3.2-python3.11
USER airflow
RUN --mount=type=bind,source=.,target=/tmp/airflow-provider-milvus,rw \\
    pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /tmp/airflow-provider-milvus
"""
BROKEN_COPY = """
FROM apache/airflow:3.3.2-python3.11
USER airflow
COPY . /opt/src
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/src
"""
WORKING_COPY = """
FROM apache/airflow:3.3.2-python3.11
USER airflow
COPY --chown=airflow:0 . /opt/src
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/src && rm -rf /opt/src
"""


def _parse(text: str) -> list[tuple[str, str]]:
    instructions = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize(
    ("dockerfile", "problem"),
    [(BROKEN_BIND_MOUNT, "inside the root-owned bind mount"), (BROKEN_COPY, "--chown=airflow:0")],
    ids=["pip_in_root_owned_bind_mount", "copy_without_chown"],
)
def test_the_install_step_check_rejects_patterns_that_fail_as_uid_50000(dockerfile, problem):
    assert any(problem in p for p in install_step_problems(_parse(dockerfile)))


def test_the_install_step_check_accepts_copy_with_chown():
    assert install_step_problems(_parse(WORKING_COPY)) == []


def test_airflow_image_runs_pip_as_the_airflow_user():
    user = None
    for keyword, rest in _dockerfile_instructions():
        if keyword == "USER":
            user = rest
        if keyword == "RUN" and "pip install" in rest:
            assert user == "airflow"


# ------------------------------------------------------------ build context --


def _dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
        for pattern in patterns
        if not pattern.startswith("!")
        for prefix in prefixes
    )


@pytest.mark.parametrize("path", [".env", "tests/test_docker_compose.py", ".venv/bin/python"])
def test_dockerignore_keeps_secrets_and_tests_out_of_the_build_context(path):
    assert _ignored(path, _dockerignore_patterns()), f"{path} would be sent to the Docker daemon"


def test_dockerignore_keeps_everything_the_package_build_needs():
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    needed = [
        "pyproject.toml",
        "airflow_provider_milvus/__init__.py",
        pyproject["readme"],
        *pyproject.get("license-files", []),
    ]
    patterns = _dockerignore_patterns()
    excluded = [path for path in needed if _ignored(path, patterns)]
    assert not excluded, f".dockerignore excludes what the image build installs: {excluded}"


# ----------------------------------------------------- start-up and comments --


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(value))
    assert match, value
    assert any(match.groups()), value
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


@pytest.mark.parametrize("name", ["etcd", "minio"])
def test_milvus_dependencies_are_checked_often_while_starting(services, name):
    """Milvus waits for these checks: a 30 s interval delayed the whole stack by 30-60 s."""
    check = services[name]["healthcheck"]
    assert _seconds(check["interval"]) <= 10
    assert "start_period" in check
    assert _seconds(check["start_period"]) > 0
    assert _seconds(check["timeout"]) <= _seconds(check["interval"])


def test_compose_comments_say_what_an_empty_fernet_key_and_default_deferrable_mean():
    text = COMPOSE_FILE.read_text()
    fernet = text[text.index("AIRFLOW__CORE__FERNET_KEY") :].split("\n\n", 1)[0]
    assert "UNENCRYPTED" in fernet
    deferrable = text[: text.index("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")].rsplit("\n\n", 1)[-1]
    assert "EVERY operator" in deferrable
    assert "from every provider" in deferrable


# --------------------------------------------- optional: compose validation --


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
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
