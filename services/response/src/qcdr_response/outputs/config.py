"""Which sinks exist: a YAML file (``QCDR_OUTPUTS_FILE``) and the seed's environment variables.

    outputs:
      - type: slack
        name: secops                      # default: the type
        webhook_url: ${env:SLACK_WEBHOOK_URL}
        min_severity: high
      - type: splunk_hec
        url: https://splunk.example:8088
        token: ${file:/var/run/secrets/qcdr/hec-token}

String values may be ``${env:NAME}`` or ``${file:/path}`` (whole value), so secrets stay out of the
file. Each entry is validated by its sink's own model: an unknown type or key fails with the entry
and the reason. The seed's variables add a sink each when set and not defined in the file:
``SLACK_WEBHOOK_URL`` (slack), ``PAGERDUTY_ROUTING_KEY`` (pagerduty), ``SPLUNK_HEC_URL`` with
``SPLUNK_HEC_TOKEN`` (splunk_hec), ``ELASTICSEARCH_URL`` (elasticsearch), ``TEAMS_WEBHOOK_URL``
(teams).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from qcdr_common.config_files import ConfigFileError, load_yaml_file

from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.registry import load_sinks

_REF = re.compile(r"^\$\{(env|file):([^}]+)\}$")
# seed variable(s) -> (type, name, {field: variable})
ENV_SINKS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("slack", "slack", {"webhook_url": "SLACK_WEBHOOK_URL"}),
    ("pagerduty", "pagerduty", {"routing_key": "PAGERDUTY_ROUTING_KEY"}),
    ("splunk_hec", "splunk", {"url": "SPLUNK_HEC_URL", "token": "SPLUNK_HEC_TOKEN"}),
    ("elasticsearch", "elasticsearch", {"url": "ELASTICSEARCH_URL"}),
    ("teams", "teams", {"webhook_url": "TEAMS_WEBHOOK_URL"}),
)


class OutputsConfigError(ValueError):
    """The outputs configuration cannot be used; the message says where and why."""


def _resolve(value: Any, where: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, f"{where}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, f"{where}[{i}]", environ) for i, v in enumerate(value)]
    if not isinstance(value, str) or (m := _REF.match(value.strip())) is None:
        return value
    source, ref = m.groups()
    if source == "env":
        if ref not in environ:
            raise OutputsConfigError(f"{where}: environment variable {ref} is not set")
        return environ[ref]
    try:
        return Path(ref).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OutputsConfigError(f"{where}: cannot read {ref}: {exc.strerror}") from None


def parse_entries(
    entries: list[Any], environ: Mapping[str, str], origin: str = "outputs"
) -> list[SinkConfig]:
    sinks = load_sinks()
    configs: list[SinkConfig] = []
    names: set[str] = set()
    for i, raw in enumerate(entries):
        where = f"{origin}[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise OutputsConfigError(f"{where}: each output is a mapping with a 'type'")
        kind = raw["type"]
        if kind not in sinks:
            raise OutputsConfigError(
                f"{where}: unknown type {kind!r} (known: {', '.join(sorted(sinks.names()))})"
            )
        data = _resolve({"name": kind.replace("_", "-"), **raw}, where, environ)
        try:
            config = sinks.get(kind).config_model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            raise OutputsConfigError(f"{where} ({kind}): {field}: {first['msg']}") from None
        if config.name in names:
            raise OutputsConfigError(f"{where}: a second output named {config.name!r}")
        names.add(config.name)
        configs.append(config)
    return configs


def from_environment(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    entries = []
    for kind, name, fields in ENV_SINKS:
        values = {field: environ.get(var, "").strip() for field, var in fields.items()}
        if all(values.values()):
            entries.append({"type": kind, "name": name, **values})
    return entries


def load_outputs(path: Path | None, environ: Mapping[str, str] | None = None) -> list[SinkConfig]:
    env = os.environ if environ is None else environ
    entries: list[Any] = []
    if path is not None:
        try:
            data = load_yaml_file(path) or {}
        except ConfigFileError as exc:
            raise OutputsConfigError(str(exc)) from None
        if (
            not isinstance(data, dict)
            or set(data) - {"outputs"}
            or not isinstance(data.get("outputs", []), list)
        ):
            raise OutputsConfigError(f"{path}: expected a mapping with one key, 'outputs' (a list)")
        entries = list(data.get("outputs") or [])
    named = {
        str(e.get("name") or e.get("type", "")).replace("_", "-") for e in entries if isinstance(e, dict)
    }
    types = {e.get("type") for e in entries if isinstance(e, dict)}
    for entry in from_environment(env):
        if entry["name"] not in named and entry["type"] not in types:
            entries.append(entry)
    return parse_entries(entries, env, str(path) if path else "environment")
