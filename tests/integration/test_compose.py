"""docker-compose.yml: valid against the Compose Specification, accepted by Debian's docker-compose,
wired as the issue asks; and ``make up`` (scripts/devstack.py) running the same set as processes."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from qcdr_common.testing.redis_keys import delete_prefixed_keys
from qcdr_response.outputs.config import ENV_SINKS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = ["ingest", "analysis", "response", "admission", "federation"]
# The seed's notification variables, as the response service reads them.
OUTPUT_VARIABLES = tuple(var for _, _, fields in ENV_SINKS for var in fields.values())
DATASTORES = ["postgres", "redis"]
TOKEN = "compose-test-token-0123456789abcdef"
CHECK_JSONSCHEMA = str(Path(sys.executable).parent / "check-jsonschema")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the YAML anchors and merges
    return data


def docker_compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing, and CI is set (make test-deps installs it)")
        pytest.skip("Debian's docker-compose is not installed (make test-deps installs it)")
    return found


def test_valid_against_the_compose_specification() -> None:
    """The Compose Specification's JSON schema, as check-jsonschema ships it (offline)."""
    result = subprocess.run(
        [
            CHECK_JSONSCHEMA,
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_mistakes(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [
            CHECK_JSONSCHEMA,
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "intervall" in result.stdout + result.stderr


@pytest.mark.parametrize("env_file", [None, ENV_EXAMPLE], ids=["defaults", "env-example"])
def test_debian_docker_compose_parses_it(env_file: Path | None) -> None:
    binary = docker_compose_binary()
    command = [binary]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    command += ["-f", str(COMPOSE), "config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCDR_", "POSTGRES_", "QUALYS_"))}
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    rendered = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    config = yaml.safe_load(rendered.stdout)
    assert sorted(config["services"]) == sorted([*DATASTORES, "migrate", *SERVICES])
    ingest_env = config["services"]["ingest"]["environment"]
    assert ingest_env["DATABASE_URL"].startswith("postgresql+asyncpg://qcdr:")
    assert ingest_env["DATABASE_URL"].endswith("@postgres:5432/qcdr")
    assert ingest_env["REDIS_URL"] == "redis://redis:6379/0"


def test_datastores() -> None:
    services = compose()["services"]
    postgres, redis = services["postgres"], services["redis"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for name in DATASTORES:
        assert "ports" not in services[name], f"{name} must not be published on the host"


def test_migrations_are_a_one_shot_before_the_services() -> None:
    migrate = compose()["services"]["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    script = migrate["command"][0]
    loop = re.search(r"for svc in ([a-z ]+); do", script)
    assert loop is not None
    assert loop.group(1).split() == SERVICES  # ingest first: analysis reads the view it owns
    assert "qcdr-$$svc db upgrade" in script
    assert migrate["build"]["dockerfile"] == "Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_services(service: str) -> None:
    spec = compose()["services"][service]
    assert spec["build"] == {
        "context": ".",
        "dockerfile": f"services/{service}/Dockerfile",
        "args": {"BASE_IMAGE": "${BASE_IMAGE:-python:3.11-slim}"},
    }
    assert spec["image"] == f"qcdr/{service}:${{QCDR_VERSION:-0.1.0}}"
    assert spec["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert "/readyz" in spec["healthcheck"]["test"][-1]
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    (port,) = spec["ports"]
    assert port.startswith("127.0.0.1:")
    assert port.endswith(":8000")
    env = spec["environment"]
    for key in ("DATABASE_URL", "REDIS_URL", "QCDR_REDIS_PREFIX", "QCDR_API_TOKEN"):
        assert key in env


def test_the_seeds_output_variables_reach_the_response_service_only() -> None:
    services = compose()["services"]
    for var in OUTPUT_VARIABLES:
        assert services["response"]["environment"][var] == f"${{{var}:-}}"
        for name in SERVICES:
            if name != "response":
                assert var not in services[name]["environment"], (name, var)


def test_every_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert used - documented == set(), "used in docker-compose.yml, missing from .env.example"
    assert documented - used == {"COMPOSE_PROJECT_NAME"}, "documented but unused"
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith(("QCDR_API_TOKEN", "QUALYS_PASSWORD", "ABUSEIPDB_API_KEY", *OUTPUT_VARIABLES)):
            assert line.endswith("="), f"no secret values in .env.example: {line.split('=')[0]}"


# --------------------------------------------------------------------------- make up / make down


def devstack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("devstack", ROOT / "scripts" / "devstack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_up_runs_the_same_services_as_compose() -> None:
    assert list(devstack().SERVICES) == SERVICES
    defaults = [re.search(r":-(\d+)}", compose()["services"][s]["ports"][0]) for s in SERVICES]
    published = [int(m.group(1)) for m in defaults if m is not None]
    assert published == [devstack().DEFAULT_PORT_BASE + i for i in range(len(SERVICES))]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.db
@pytest.mark.redis
def test_up_status_down(tmp_path: Path, database_url: str, redis_url: str) -> None:
    prefix = f"qcdr-test-{uuid.uuid4().hex[:12]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QCDR_")},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "QCDR_REDIS_PREFIX": prefix,
        "QCDR_API_TOKEN": TOKEN,
    }
    script = [sys.executable, str(ROOT / "scripts" / "devstack.py"), "--run-dir", str(tmp_path / "run")]

    def devstack_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args], env=env, capture_output=True, text=True, timeout=timeout)

    run = tmp_path / "run"
    pids: dict[str, int] = {}
    try:
        up = devstack_cli("up", "--port-base", "0")
        assert up.returncode == 0, up.stdout + up.stderr
        assert TOKEN not in up.stdout + up.stderr
        state = yaml.safe_load((run / "state.json").read_text())  # JSON is YAML
        assert sorted(state["services"]) == sorted(SERVICES)
        assert "postgres" not in state  # DATABASE_URL given: nothing of ours to start or stop
        with httpx.Client(timeout=5.0) as client:
            for service, info in state["services"].items():
                assert info["url"].startswith("http://127.0.0.1:")
                ready = client.get(info["url"] + "/readyz")
                assert ready.status_code == 200, (service, ready.text)
                checks = ready.json()["checks"]
                assert checks["postgres"] == checks["redis"] == "ok"
                assert set(checks.values()) == {"ok"}
                assert client.get(info["url"] + "/openapi.json").status_code == 401
                spec = client.get(info["url"] + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
                assert spec.status_code == 200
                assert int((run / f"{service}.pid").read_text()) == info["pid"]
                pids[service] = info["pid"]
            # ingest's verdict API was told where analysis listens: a generated name is blocked as
            # DGA (retried while analysis loads its model in the background after start-up)
            ingest = state["services"]["ingest"]["url"]
            deadline = time.monotonic() + 30
            while True:
                verdict = client.post(
                    ingest + "/v1/dns/verdict",
                    json={"name": "clwafrfuuxq.yi.org"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).json()
                if verdict["threat"] == "dga" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert (verdict["blocked"], verdict["threat"]) == (True, "dga"), verdict
        again = devstack_cli("up", "--port-base", "0")
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already runs") == len(SERVICES)
        status = devstack_cli("status")
        assert status.stdout.count("running") == len(SERVICES)
    finally:
        down = devstack_cli("down")
        delete_prefixed_keys(redis_url, prefix)
    assert down.returncode == 0, down.stdout + down.stderr
    for service in SERVICES:
        assert not (run / f"{service}.pid").exists()
    import psutil

    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    logs = "".join((run / "logs" / f"{s}.log").read_text() for s in SERVICES)
    assert TOKEN not in logs
