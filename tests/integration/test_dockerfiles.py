"""The images: every Dockerfile parsed with a real parser (dockerfile-parse) and checked for the
house rules, and each build stage's uv steps replayed on this machine (no Docker engine runs here),
so a missing COPY or a wrong ``uv sync`` shows up before anyone builds an image."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
CLI_DOCKERFILE = ROOT / "Dockerfile"


def service_dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


ALL_DOCKERFILES = [*(service_dockerfile(s) for s in SERVICES), CLI_DOCKERFILE]
IDS = [str(p.relative_to(ROOT)) for p in ALL_DOCKERFILES]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]


@dataclass
class Parsed:
    preamble: list[tuple[str, str]]  # instructions before the first FROM
    stages: list[Stage]


def parse(path: Path) -> Parsed:
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            base, _, name = value.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif stages:
            stages[-1].instructions.append((kind, value))
        else:
            preamble.append((kind, value))
    return Parsed(preamble, stages)


def workspace_members() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        members += sorted(
            str(p.relative_to(ROOT)) for p in ROOT.glob(pattern) if (p / "pyproject.toml").exists()
        )
    return members


def test_every_service_has_a_dockerfile() -> None:
    assert SERVICES == ["admission", "analysis", "federation", "ingest", "response"]
    for service in SERVICES:
        assert service_dockerfile(service).is_file(), service


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=IDS)
def test_base_image_is_a_build_argument_declared_before_the_first_from(path: Path) -> None:
    parsed = parse(path)
    assert parsed.preamble, "no ARG before the first FROM"
    assert parsed.preamble[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert {kind for kind, _ in parsed.preamble} == {"ARG"}
    for stage in parsed.stages:
        assert stage.base == "${BASE_IMAGE}", f"stage {stage.name} does not build on BASE_IMAGE"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=IDS)
def test_multi_stage_with_a_slim_runtime(path: Path) -> None:
    parsed = parse(path)
    assert [s.name for s in parsed.stages] == ["build", "runtime"]
    build, runtime = parsed.stages
    assert any(v.startswith("uv sync") for v in build.all("RUN"))
    # The runtime stage takes only the virtualenv from the build stage: no sources, no uv, no compilers.
    assert runtime.all("COPY") == ["--from=build /opt/qcdr/venv /opt/qcdr/venv"]
    assert not any("uv " in v or "pip install" in v for v in runtime.all("RUN"))


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=IDS)
def test_runs_as_a_numeric_non_root_user(path: Path) -> None:
    runtime = parse(path).stages[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage never switches user"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    assert int(user) >= 1000
    assert not group or (group.isdigit() and int(group) != 0)
    # USER comes after everything that needs root.
    last_user = max(i for i, (kind, _) in enumerate(runtime.instructions) if kind == "USER")
    assert all(kind != "RUN" for kind, _ in runtime.instructions[last_user:])
    created = " ".join(runtime.all("RUN"))
    assert f"--uid {user}" in created


@pytest.mark.parametrize("service", SERVICES)
def test_service_image_serves_with_a_healthcheck(service: str) -> None:
    runtime = parse(service_dockerfile(service)).stages[-1]
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == [f"qcdr-{service}"]
    assert json.loads(runtime.all("CMD")[-1]) == ["serve"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--interval=" in options
    assert "--timeout=" in options
    assert "/healthz" in json.loads(command.strip())[-1]
    assert runtime.all("EXPOSE") == ["8000"]
    env = " ".join(runtime.all("ENV"))
    assert "QCDR_HTTP_HOST=0.0.0.0" in env
    assert "QCDR_HTTP_PORT=8000" in env


def test_cli_image_runs_qcdr() -> None:
    runtime = parse(CLI_DOCKERFILE).stages[-1]
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["qcdr"]
    assert runtime.all("HEALTHCHECK") == ["NONE"]


def test_service_dockerfiles_differ_only_in_the_service_name() -> None:
    reference = service_dockerfile("ingest").read_text().splitlines()
    for service in SERVICES:
        lines = service_dockerfile(service).read_text().splitlines()
        assert len(lines) == len(reference), service
        for mine, theirs in zip(lines, reference, strict=True):
            # The workspace's pyproject.toml lines name every service, identically in every file.
            expected = theirs if "/pyproject.toml" in theirs else theirs.replace("ingest", service)
            assert mine == expected, service


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=IDS)
def test_build_stage_copies_every_workspace_member_and_nothing_ignored(path: Path) -> None:
    build = parse(path).stages[0]
    sources = [src for value in build.all("COPY") for src in shlex.split(value)[:-1]]
    for member in workspace_members():
        assert f"{member}/pyproject.toml" in sources, f"{member}/pyproject.toml is not copied"
    assert {"pyproject.toml", "uv.lock"} <= set(sources)
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for src in sources:
        assert (ROOT / src).exists(), src
        for pattern in ignored:
            assert not fnmatch.fnmatch(src, pattern.removeprefix("**/")), (src, pattern)


# --------------------------------------------------------------------------- replay the build stage


def _replay_build_stage(path: Path, workdir: Path) -> Path:
    """Copy what the build stage copies and run its ``uv`` steps; return the virtualenv."""
    build = parse(path).stages[0]
    context = workdir / "src"
    venv = workdir / "venv"
    context.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for value in build.all("ENV"):
        for pair in shlex.split(value):
            key, _, val = pair.partition("=")
            env[key] = val
    # Paths of this machine instead of the image's; links instead of copies (faster, same result).
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_COMPILE_BYTECODE="0", UV_LINK_MODE="hardlink")
    for kind, value in build.instructions:
        if kind == "COPY":
            *sources, dest = shlex.split(value)
            for src in sources:
                origin = ROOT / src
                if origin.is_dir():  # COPY <dir> <dest>: the directory's contents into dest
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, context / dest, dirs_exist_ok=True, ignore=ignore)
                    continue
                target = context / dest / origin.name if dest.endswith("/") else context / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
        elif kind == "RUN" and value.startswith("uv "):
            result = subprocess.run(
                shlex.split(value), cwd=context, env=env, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, f"{value}\n{result.stderr[-3000:]}"
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=IDS)
def test_build_stage_produces_a_working_virtualenv(path: Path, tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.fail("uv is not on PATH (make install puts it there)")
    venv = _replay_build_stage(path, tmp_path)
    runtime = parse(path).stages[-1]
    entrypoint = json.loads(runtime.all("ENTRYPOINT")[-1])[0]
    executable = venv / "bin" / entrypoint
    assert executable.exists(), f"{entrypoint} is not installed in the image's virtualenv"
    command = [str(executable), *json.loads(runtime.all("CMD")[-1])]
    if command[-1] == "serve":
        command.append("--help")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    # Installed as copies, not links back to this checkout: the runtime stage gets no sources.
    direct_urls = list((venv / "lib").glob("python3*/site-packages/qcdr*.dist-info/direct_url.json"))
    assert direct_urls
    for direct_url in direct_urls:
        assert not json.loads(direct_url.read_text()).get("dir_info", {}).get("editable", False), direct_url
    if path != CLI_DOCKERFILE:
        service = path.parent.name
        probe = f"import importlib; importlib.import_module('qcdr_{service}.app').create_app"
        assert (
            subprocess.run([str(venv / "bin" / "python"), "-c", probe], env=env, timeout=60).returncode == 0
        )
        others = {s for s in SERVICES if s != service}
        installed = {
            m.group(1)
            for p in (venv / "lib").glob("python3*/site-packages/qcdr_*.dist-info")
            if (m := re.match(r"qcdr_(\w+?)-", p.name))
        }
        assert not (installed & others), f"the {service} image carries other services: {installed & others}"
