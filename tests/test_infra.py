"""The deployment files under infra/ (issue 8), checked without Docker, Kubernetes or the network.

Compose: its structure (one image, health checks, dependencies, volumes, the shared environment) and
every command and health check parsed by the installed program's own command line (dagster,
dagster-webserver, dagster-daemon, celery, bankanom), so a misspelt flag fails here. The workspace
file goes through Dagster's own schema, the Helm values are checked against the key names of the
chart's values schema, and `docker compose config` runs where the Compose plugin exists.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import types
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
IMAGE_ROOT = "/opt/bankanom"  # WORKDIR of the image, where `COPY . .` puts the repository
APP_SERVICES = {"code-location", "webserver", "daemon", "worker", "api", "mockserver"}
BACKING_SERVICES = {"postgres", "redis"}
SHARED_PATHS = ("BANKANOM_DATA_DIR", "BANKANOM_LAKE_ROOT", "BANKANOM_MODELS_DIR", "BANKANOM_SNAPSHOTS_DIR")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax: started, not healthy
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _one_shot(services: dict[str, dict]) -> set[str]:
    """Services that others wait for to finish (migrations and the like): they need no health check."""
    return {
        name
        for service in services.values()
        for name, dep in _depends_on(service).items()
        if dep.get("condition") == "service_completed_successfully"
    }


def _volume_mounts(service: dict) -> list[tuple[str | None, str]]:
    """(source, target) of each mount; source None for an anonymous volume."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((entry.get("source"), entry["target"]))
        else:
            parts = entry.split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else (None, parts[0]))
    return mounts


def _is_named_volume(source: str | None) -> bool:
    return bool(source) and not source.startswith(("/", ".", "~", "$")) and "/" not in source


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _option(argv: list[str], *names: str) -> str | None:
    for i, part in enumerate(argv[:-1]):
        if part in names:
            return argv[i + 1]
    return None


def test_compose_has_the_platform_services(services):
    assert set(services) == APP_SERVICES | BACKING_SERVICES


def test_every_app_service_runs_the_one_image_built_from_infra_dockerfile(services):
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, images
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name} does not build the image"
        assert (INFRA / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository"
        dockerfile = (INFRA / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile == INFRA / "Dockerfile", f"{name}: builds {dockerfile}"


def test_backing_service_images_are_pinned(services):
    for name in BACKING_SERVICES:
        image = services[name]["image"]
        repository, _, tag = image.partition(":")
        assert repository and tag and tag != "latest" and any(c.isdigit() for c in tag), image
        assert "build" not in services[name]


def test_every_long_running_service_has_a_health_check(services):
    for name in set(services) - _one_shot(services):
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} has no health check"
        assert check["test"] != ["NONE"] and not check.get("disable"), f"{name}: health check disabled"


def test_depends_on_targets_exist_and_are_waited_for(services):
    for name, service in services.items():
        for target, dep in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = dep.get("condition")
            if target in _one_shot(services):
                assert condition == "service_completed_successfully"
            else:
                assert condition == "service_healthy", f"{name} starts before {target} is healthy"
                assert services[target].get("healthcheck"), f"{name} waits on {target}, which has no check"


def test_the_dagster_processes_wait_for_postgres_and_the_code_location(services):
    for name in ("webserver", "daemon"):
        assert {"postgres", "code-location"} <= set(_depends_on(services[name])), name
    for name in ("code-location", "worker"):  # both talk to the broker and the instance
        assert {"postgres", "redis"} <= set(_depends_on(services[name])), name


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for source, target in _volume_mounts(service):
            assert source is not None, f"{name}: anonymous volume at {target}"
            if _is_named_volume(source):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    assert "pgdata" in {source for source, _ in _volume_mounts(services["postgres"])}


def test_app_services_share_one_environment(services):
    def env(name: str) -> dict:
        return {k: v for k, v in services[name]["environment"].items() if k != "BANKANOM_API_KEYS"}

    reference = env("code-location")
    for name in APP_SERVICES:
        assert env(name) == reference, f"{name} has an environment of its own"
    assert reference["BANKANOM_STORAGE"] == "lake"
    assert reference["BANKANOM_EXECUTOR"] == "celery"
    assert reference["BANKANOM_CELERY_BROKER"] == "redis://redis:6379/0"
    assert reference["BANKANOM_CELERY_BACKEND"] == "redis://redis:6379/1"
    for key in ("BANKANOM_CELERY_BROKER", "BANKANOM_CELERY_BACKEND"):
        assert urllib.parse.urlsplit(reference[key]).hostname in services
    assert reference["DAGSTER_PG_HOST"] in services
    for key in ("DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        assert reference.get(key), key
    assert "BANKANOM_API_KEYS" in services["api"]["environment"]


def test_shared_folders_are_on_a_volume_every_app_service_mounts(services):
    """Lake, models, snapshots and landing zone are written by one container and read by another."""
    for name in APP_SERVICES:
        mounts = {target: source for source, target in _volume_mounts(services[name])}
        env = services[name]["environment"]
        for key in SHARED_PATHS:
            path = env[key]
            holders = [t for t in mounts if path == t or path.startswith(t.rstrip("/") + "/")]
            assert holders, f"{name}: {key}={path} is not on a volume"
            assert all(_is_named_volume(mounts[t]) for t in holders), f"{name}: {key} not on a named volume"
        sources = {mounts[t] for t in mounts if env["BANKANOM_DATA_DIR"].startswith(t)}
        assert sources == {"data"}, f"{name}: the data folder is not the shared volume"


def test_worker_consumes_the_dagster_queue_and_scales(services):
    worker = services["worker"]
    argv = _command(worker)
    assert argv[0] == "celery"
    assert _option(argv, "-A", "--app") == "bankanom_pipeline.defs.celery_app"
    assert "worker" in argv
    assert "dagster" in (_option(argv, "-Q", "--queues") or "").split(",")
    assert _option(argv, "-c", "--concurrency") == "1"
    assert "%h" in (_option(argv, "-n", "--hostname") or ""), "worker names must differ per container"
    assert worker.get("deploy", {}).get("replicas", 1) >= 2
    assert "container_name" not in worker, "a fixed container name prevents --scale"


def test_servers_listen_on_all_interfaces_and_health_checks_probe_their_port(services):
    for name in ("code-location", "webserver", "api", "mockserver"):
        argv = _command(services[name])
        assert _option(argv, "-h", "--host") == "0.0.0.0", f"{name} must bind 0.0.0.0 in a container"
        port = _option(argv, "-p", "--port")
        test = services[name]["healthcheck"]["test"]
        probe = " ".join(test[1:])
        assert f":{port}/" in probe or f"-p {port}" in probe, f"{name} listens on {port}; check: {probe}"
    for name in ("webserver", "api", "mockserver"):
        port = _option(_command(services[name]), "-p", "--port")
        for mapping in services[name].get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name} published on every interface: {mapping}"
            assert mapping.endswith(f":{port}")


def test_code_location_serves_the_definitions(services):
    argv = _command(services["code-location"])
    assert argv[:3] == ["dagster", "code-server", "start"]
    module, attribute = _option(argv, "-m", "--module-name"), _option(argv, "-a", "--attribute")
    path = ROOT / (module.replace(".", "/") + ".py")
    assignments = {
        target.id
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert attribute in assignments, f"{module} has no top-level {attribute}"


# -- every command line is accepted by the installed program -------------------------------------


@pytest.fixture(scope="module")
def programs() -> dict:
    import typer
    from celery.bin.celery import celery
    from dagster._cli import cli as dagster_cli
    from dagster._daemon.cli import cli as daemon_cli
    from dagster_webserver.cli import cli as webserver_cli

    from bankanom_pipeline.cli import app

    return {
        "dagster": dagster_cli,
        "dagster-daemon": daemon_cli,
        "dagster-webserver": webserver_cli,
        "celery": celery,
        "bankanom": typer.main.get_command(app),
    }


def _parse(programs: dict, argv: list[str]) -> dict:
    """Parse ``argv`` as the program would (options, types, existing paths), without running it.
    Paths inside the image are mapped to the repository, which the image copies to IMAGE_ROOT."""
    from celery import Celery

    argv = [
        str(ROOT) + part[len(IMAGE_ROOT) :] if part.startswith(IMAGE_ROOT + "/") else part for part in argv
    ]
    program, *rest = argv
    command, path = programs[program], [program]
    # celery's worker options read the app's configuration: an unconfigured app stands in for -A
    obj = types.SimpleNamespace(app=Celery(set_as_current=False)) if program == "celery" else None
    while hasattr(command, "list_commands"):  # a group: descend to the subcommand
        if program == "celery" and rest[:1] in (["-A"], ["--app"]):
            rest = rest[2:]
        name, *rest = rest
        sub = command.get_command(command.context_class(command, info_name=" ".join(path)), name)
        assert sub is not None, f"`{' '.join(path)}` has no command {name!r}"
        command, path = sub, [*path, name]
    return command.make_context(" ".join(path), rest, obj=obj).params


def _commands_to_check(services: dict) -> list[tuple[str, list[str]]]:
    checks = []
    for name, service in services.items():
        if "command" in service and name in APP_SERVICES:
            checks.append((f"{name} command", _command(service)))
        test = (service.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD"]:
            checks.append((f"{name} health check", [str(part) for part in test[1:]]))
        elif test[:1] == ["CMD-SHELL"]:  # $$ is Compose's escape for a literal $
            checks.append((f"{name} health check", shlex.split(test[1].replace("$$", "$"))))
    return checks


def test_commands_and_health_checks_parse_with_the_installed_programs(programs, services):
    checked = set()
    for what, argv in _commands_to_check(services):
        if argv[0] not in programs:
            continue  # pg_isready, redis-cli, python -c
        try:
            _parse(programs, argv)
        except Exception as error:
            pytest.fail(f"{what} `{shlex.join(argv)}` is refused: {error}")
        checked.add(what)
    expected = {f"{name} command" for name in APP_SERVICES} | {
        f"{name} health check" for name in ("code-location", "daemon", "worker")
    }
    assert expected <= checked, expected - checked


def test_the_parser_refuses_a_bad_flag(programs):
    """The check above can fail: a misspelt option or an unknown subcommand is an error."""
    for argv in (
        ["bankanom", "api", "--hots", "0.0.0.0"],
        ["celery", "-A", "x", "worker", "--concurency", "1"],
        ["dagster", "code-server", "begin"],
        ["dagster-daemon", "run", "-w", f"{IMAGE_ROOT}/infra/no-such-workspace.yaml"],
    ):
        with pytest.raises(Exception):  # noqa: B017 (click's and typer's errors have no common base)
            _parse(programs, argv)


def test_workspace_loads_the_code_location_over_grpc(services):
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = yaml.safe_load((INFRA / "workspace.yaml").read_text())
    result = process_workspace_config(workspace)
    assert result.success, result.errors
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "code-location" and server["location_name"] == "bankanom"
    assert str(server["port"]) == _option(_command(services["code-location"]), "-p", "--port")
    for name in ("webserver", "daemon"):
        assert _option(_command(services[name]), "-w", "--workspace") == f"{IMAGE_ROOT}/infra/workspace.yaml"


def test_the_celery_app_module_exists():
    """The workers' -A target: a module, or an attribute of its package, as celery resolves it."""
    target = "bankanom_pipeline.defs.celery_app"
    try:
        importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name != target:
            pytest.fail(f"the workers' -A target {target} cannot be imported: {error}")
        package, _, attribute = target.rpartition(".")
        assert hasattr(importlib.import_module(package), attribute), f"no {target}"


# -- Dockerfile and build context ---------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (INFRA / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_as_a_non_root_user():
    users = [args.strip() for instruction, args in _dockerfile() if instruction == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}, users[-1]


def test_dockerfile_installs_the_project_with_the_deploy_extra():
    instructions = _dockerfile()
    (base,) = [args for instruction, args in instructions if instruction == "FROM"]
    image, _, tag = base.split()[0].partition(":")
    assert image == "python" and tag.startswith("3.11.") and "slim" in tag, base
    installs = [args for instruction, args in instructions if instruction == "RUN" and "pip install" in args]
    assert any('".[deploy]"' in args or "'.[deploy]'" in args for args in installs), installs
    # the first install reads the pins from pyproject.toml (main list and the deploy extra)
    assert any("optional-dependencies']['deploy']" in args for args in installs)
    assert ("WORKDIR", IMAGE_ROOT) in instructions
    env = " ".join(args for instruction, args in instructions if instruction == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/home" in env and "BANKANOM_DATA_DIR=/data" in env
    assert ("COPY", "infra/dagster.yaml /opt/dagster/home/dagster.yaml") in instructions


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matches a path or a parent."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".venv/bin/python", "data/warehouse.duckdb", "dagster_home/dagster.yaml", ".git/HEAD"):
        assert _docker_ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("bankanom_pipeline/__pycache__/cli.cpython-311.pyc", "bankanom.egg-info/PKG-INFO"):
        assert _docker_ignored(path, patterns), path
    needed = [
        "pyproject.toml",
        "README.md",
        "bankanom_pipeline/definitions.py",
        "bankanom_pipeline/warehouse/schema.sql",
        "bankanom_api/main.py",
        "dbt_like_sql/features/features_events.sql",
        "infra/workspace.yaml",
        "infra/dagster.yaml",
    ]
    for path in needed:
        assert not _docker_ignored(path, patterns), f"{path} is needed by the image but ignored"


# -- Helm values ---------------------------------------------------------------------------------

# Key names from the chart's values schema (helm/dagster/schema in the dagster repository, 1.13.x):
# DagsterHelmValues, UserDeployment and K8sRunLauncherConfig. A key outside these is a typo the chart
# would silently ignore.
CHART_TOP_LEVEL = {
    "global", "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis", "flower",
    "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher", "pythonLogs",
    "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount", "retention", "concurrency",
    "additionalInstanceConfig", "nameOverride", "fullnameOverride", "rbacEnabled",
}  # fmt: skip
USER_DEPLOYMENT_KEYS = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
    "deploymentNamespace", "port", "replicaCount", "env", "envConfigMaps", "envSecrets", "annotations",
    "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
    "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes",
    "schedulerName", "initContainers", "sidecarContainers", "deploymentStrategy",
}  # fmt: skip
K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip


@pytest.fixture(scope="module")
def helm_values() -> dict:
    return yaml.safe_load((INFRA / "helm" / "values.yaml").read_text())


def test_helm_values_use_the_k8s_run_launcher(helm_values):
    assert set(helm_values) <= CHART_TOP_LEVEL, set(helm_values) - CHART_TOP_LEVEL
    launcher = helm_values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER_KEYS
    assert helm_values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert "enabled" in helm_values["postgresql"]


def test_helm_user_deployment_serves_the_code_module_with_the_deployment_env(helm_values, services):
    section = helm_values["dagster-user-deployments"]
    assert section["enabled"] is True
    (deployment,) = section["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT_KEYS, set(deployment) - USER_DEPLOYMENT_KEYS
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert _option(args, "-m", "--module-name") == "bankanom_pipeline.definitions"
    assert _option(args, "-a", "--attribute") == "defs"
    assert deployment["image"]["repository"] and deployment["image"]["tag"] not in {"", "latest"}
    env = deployment["env"]
    assert env["BANKANOM_STORAGE"] == "lake" and env["BANKANOM_EXECUTOR"] == "celery"
    compose_env = services["code-location"]["environment"]
    assert set(compose_env) - set(env) == {k for k in compose_env if k.startswith("DAGSTER_")}, (
        "the Helm user deployment lacks a bankanom setting the compose services have"
    )
    mounts = {m["mountPath"] for m in deployment.get("volumeMounts", [])}
    assert env["BANKANOM_DATA_DIR"] in mounts, "the data folder must be a shared volume on Kubernetes too"
    assert deployment["podSecurityContext"]["runAsUser"] != 0


# -- docker compose config, where the Compose plugin exists --------------------------------------


@pytest.mark.e2e
def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        reason = (version.stderr or version.stdout).strip().splitlines()[0]
        pytest.skip(f"the docker CLI has no compose plugin ({reason})")
    result = subprocess.run(
        [docker, "compose", "-f", str(INFRA / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BANKANOM_API_KEYS": "test-key"},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_the_entrypoint_checks_the_deployment_before_starting_the_process(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BANKANOM_DATA_DIR": str(tmp_path)}
    entrypoint = str(INFRA / "entrypoint.sh")
    ok = subprocess.run(
        ["sh", entrypoint, "echo", "started"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "started", ok.stderr
    bad = subprocess.run(
        ["sh", entrypoint, "echo", "started"],
        env={
            **env,
            "BANKANOM_STORAGE": "lake",
            "BANKANOM_EXECUTOR": "celery",
            "BANKANOM_CELERY_BROKER": "redis://127.0.0.1:9/0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "started" not in bad.stdout
    assert "BANKANOM_CELERY_BROKER='redis://127.0.0.1:9/0' is unreachable" in " ".join(
        bad.stdout.split() + bad.stderr.split()
    )
