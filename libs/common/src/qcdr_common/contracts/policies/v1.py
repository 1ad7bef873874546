"""``PolicyDocument`` v1: one generated Kubernetes object (TracingPolicy, Cilium policy, ...)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, computed_field

VERSION = 1


class TargetVersions(BaseModel):
    """The enforcement agents a document was generated and validated for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tetragon: str = "1.5"
    cilium: str = "1.17"


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str = Field(description="The generator that produced it (e.g. 'container-escape').")
    filename: str = Field(description="File name the CLI writes it to, relative to the output dir.")
    body: dict[str, Any] = Field(description="The Kubernetes object, apiVersion to spec.")
    source_ids: list[str] = Field(default_factory=list, description="Ids of the findings behind it.")
    finding_count: int = 0
    targets: TargetVersions = Field(default_factory=TargetVersions)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name", ""))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def namespace(self) -> str | None:
        ns = self.body.get("metadata", {}).get("namespace")
        return str(ns) if ns else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the body: equal bodies, equal hashes."""
        return hashlib.sha256(orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def to_yaml(self) -> str:
        return dump_yaml(self.body)


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order written, and no anchors (k8s tooling dislikes them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: Any, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    node: yaml.Node = dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)
    return node


_Dumper.add_representer(str, _str_representer)

_CSafeDumper: type[Any] | None = getattr(yaml, "CSafeDumper", None)
_FastDumper: type[Any] | None = None
if _CSafeDumper is not None:

    class _LibYamlDumper(_CSafeDumper):  # type: ignore[misc,valid-type]
        """The same style on libyaml's emitter."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    _LibYamlDumper.add_representer(str, _str_representer)
    _FastDumper = _LibYamlDumper


def dump_yaml(body: Any, *, pure: bool = False) -> str:
    """``body`` as YAML: block style, keys as written, no anchors. On libyaml when PyYAML has it
    (the pure-Python emitter costs ~10 ms a policy, and a threat-intel blocklist has 100,000
    lines); ``pure`` forces the Python emitter. Both give the same bytes (tested)."""
    dumper = _Dumper if pure or _FastDumper is None else _FastDumper
    text: str = yaml.dump(body, Dumper=dumper, sort_keys=False, default_flow_style=False, width=120)
    return text
