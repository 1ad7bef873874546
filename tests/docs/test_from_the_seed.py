"""docs/FROM-THE-SEED.md says where each Go call of the seed's README went: a route, a command or a
setting. A route that was renamed or sits in another service, a command or flag that was never
built, a mistyped variable, or a seed call without a row fails here instead of sending a reader
to something that does not exist."""

from __future__ import annotations

import functools
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from tests.docs.test_metrics_doc import defined_in_code

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "FROM-THE-SEED.md"
SOURCES = [ROOT / "services", ROOT / "libs", ROOT / "src"]
SERVICES = ("ingest", "analysis", "response", "admission", "federation")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# a route and the service that serves it: `POST /v1/dns/verdict` (ingest), `GET /v1/clusters`
# (federation, hub)
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`(?: \((\w+)(?:, (\w+))?\))?")
SPAN = re.compile(r"`([^`\n]+)`")
# the umbrella CLI and each service's own
PROGRAMS = {"qcdr": ("qcdr.cli", "app"), **{f"qcdr-{s}": (f"qcdr_{s}.cli", "cli") for s in SERVICES}}
# a variable, alone in its backticks, optionally with a value: `QCDR_ACTIONS_MODE=enforce`
VARIABLE = re.compile(r"([A-Z][A-Z0-9]*(?:__?[A-Z0-9]+)+)(?:=\S*)?")
SEED_CALL = re.compile(r"\.([A-Z][A-Za-z]+)\(")
GO_BLOCK = re.compile(r"^```go\n(.*?)^```", re.S | re.M)

runner = CliRunner()


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def first_cells() -> list[str]:
    """The first cell of every table row: the seed's calls."""
    return [line.split("|")[1] for line in doc().splitlines() if line.startswith("| `")]


# --- routes -----------------------------------------------------------------------------------


def routes_of(app: FastAPI) -> frozenset[tuple[str, str]]:
    """(method, path template) of every route: those in the OpenAPI document (which sees into
    included routers) and the app's own routes outside it (``POST /validate``, ``/metrics``)."""
    found = {
        (method.upper(), path)
        for path, item in app.openapi().get("paths", {}).items()
        for method in item
        if method.upper() in METHODS
    }
    for route in app.routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            found |= {(method, path) for method in getattr(route, "methods", None) or ()}
    return frozenset(found)


@functools.cache
def served() -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
    """The routes of each service's app, built from arguments only (no environment file); no
    lifespan runs, so nothing connects to PostgreSQL or Redis. Federation once per role."""
    from qcdr_admission.app import create_app as admission_app
    from qcdr_admission.settings import AdmissionSettings
    from qcdr_analysis.app import create_app as analysis_app
    from qcdr_analysis.settings import AnalysisSettings
    from qcdr_common.contracts.federation.v1 import FederationRole
    from qcdr_federation.app import create_app as federation_app
    from qcdr_federation.settings import FederationSettings
    from qcdr_ingest.app import create_app as ingest_app
    from qcdr_ingest.settings import IngestSettings
    from qcdr_response.app import create_app as response_app
    from qcdr_response.settings import ResponseSettings

    quiet: dict[str, Any] = {"_env_file": None}
    apps = {
        ("ingest", ""): ingest_app(IngestSettings(**quiet)),
        ("analysis", ""): analysis_app(AnalysisSettings(**quiet, consume_in_app=False)),
        ("response", ""): response_app(ResponseSettings(**quiet, consume_in_app=False)),
        ("admission", ""): admission_app(AdmissionSettings(**quiet)),
    }
    for role in FederationRole:
        settings = FederationSettings(**quiet, role=role, hub_url="https://hub.invalid")
        apps[("federation", role.value)] = federation_app(settings)
    return {key: routes_of(app) for key, app in apps.items()}


def routes_in(service: str, role: str | None) -> frozenset[tuple[str, str]]:
    return frozenset().union(
        *(routes for (s, r), routes in served().items() if s == service and role in (None, r))
    )


def test_every_route_is_served_by_the_service_named() -> None:
    mentions = ROUTE.findall(doc())
    assert len(mentions) > 30
    problems = []
    for method, path, service, role in mentions:
        if service not in SERVICES:
            problems.append(f"`{method} {path}`: name the service after it, e.g. (ingest)")
        elif (method, path) not in routes_in(service, role or None):
            where = f"{service}, {role}" if role else service
            problems.append(f"`{method} {path}` ({where}): no such route")
    assert not problems, "\n".join(problems)


def test_every_backticked_route_is_checked() -> None:
    """A route written another way (no space, lower case) would slip past the check above."""
    loose = re.compile(r"`(?:GET|POST|PUT|PATCH|DELETE)\b[^`]*`", re.I)
    strict = re.compile(r"`(?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*`")
    odd = [span for span in loose.findall(doc()) if not strict.fullmatch(span)]
    assert not odd, f"routes the check cannot read (write `METHOD /path`): {odd}"


# --- commands ---------------------------------------------------------------------------------


def commands() -> Iterator[tuple[str, list[str]]]:
    """Every backticked command line: (program, words after it)."""
    for span in SPAN.findall(doc()):
        words = shlex.split(span)
        if words and words[0] in PROGRAMS and len(words) > 1:
            yield words[0], words[1:]


def resolve(program: str, words: list[str]) -> tuple[typer.Typer, list[str], Any, list[str]]:
    """The Typer app, the subcommand path, the command it leads to, and the words left over
    (options and arguments). A word that is no subcommand of a group fails. Groups are known by
    their ``commands`` (Typer ships its own copy of click, so no ``isinstance`` with click's)."""
    module, attribute = PROGRAMS[program]
    app = getattr(importlib.import_module(module), attribute)
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(words)
    while isinstance(getattr(command, "commands", None), dict) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`{program} {' '.join([*path, rest[0]])}`: no such command"
        path.append(rest.pop(0))
        command = sub
    return app, path, command, rest


def test_every_command_resolves_with_its_options() -> None:
    found = list(commands())
    assert len(found) > 10
    problems = []
    for program, words in found:
        app, path, command, rest = resolve(program, words)
        line = " ".join([program, *words])
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            problems.append(f"`{line}`: `--help` exits {result.exit_code}: {result.output}")
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("-") and word.split("=")[0] not in known:
                problems.append(f"`{line}`: `{program} {' '.join(path)}` has no option {word}")
    assert not problems, "\n".join(problems)


# --- settings ---------------------------------------------------------------------------------


def subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


@functools.cache
def settings_variables() -> frozenset[str]:
    """The environment variables the settings classes read: every module that configures a
    settings class is imported (not only ``settings.py``: admission's PSS settings live beside
    the engine, and were only found when another test had imported it), then each
    ``BaseSettings`` field gives its alias or its prefixed name."""
    for base in SOURCES:
        for file in base.rglob("*.py"):
            if {".venv", "testing"} & set(file.parts):
                continue
            named = file.name in ("settings.py", "config.py")
            if named or "SettingsConfigDict(" in file.read_text(encoding="utf-8"):
                parts = file.with_suffix("").parts
                importlib.import_module(".".join(parts[parts.index("src") + 1 :]))
    names: set[str] = set()
    for cls in subclasses(BaseSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names |= {c.upper() for c in alias.choices if isinstance(c, str)}
            else:
                names.add((prefix + (field.alias or name)).upper())
    return frozenset(names)


@functools.cache
def code() -> str:
    return defined_in_code()


def detector_variable_exists(name: str) -> bool:
    """``QCDR_DETECTORS__<DETECTOR>__<FIELD>``: a registered detector with that config field."""
    from qcdr_analysis.detectors import load_detectors

    _, detector, field = (part.lower() for part in name.split("__"))
    registry = load_detectors()
    return detector in registry and field in registry.get(detector).config.model_fields


def test_every_variable_is_read() -> None:
    names = sorted({m.group(1) for s in SPAN.findall(doc()) if (m := VARIABLE.fullmatch(s))})
    assert len(names) > 20
    missing = []
    for name in names:
        if name.startswith("QCDR_DETECTORS__"):
            ok = name.count("__") == 2 and detector_variable_exists(name)
        else:
            # the seed's variables (SLACK_WEBHOOK_URL, ...) are read by name, not through a field
            ok = name in settings_variables() or f'"{name}"' in code()
        if not ok:
            missing.append(name)
    assert not missing, f"docs/FROM-THE-SEED.md names variables nothing reads: {missing}"


# --- the seed's calls -------------------------------------------------------------------------


@pytest.mark.shared
def test_every_seed_call_has_a_row(shared_path: Path) -> None:
    """``shared_path`` is ``../shared`` beside the checkout (the plugin's fixture)."""
    readme = (shared_path / "seed" / "ORIGINAL-README.md").read_text(encoding="utf-8")
    seed = {name for block in GO_BLOCK.findall(readme) for name in SEED_CALL.findall(block)}
    assert len(seed) > 30
    rows = {name for cell in first_cells() for name in SEED_CALL.findall(cell)}
    assert not sorted(seed - rows), f"seed calls without a row: {sorted(seed - rows)}"
    assert not sorted(rows - seed), f"rows for calls the seed does not make: {sorted(rows - seed)}"
