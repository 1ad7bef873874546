"""``qcdr admission check``: the Pod Security Standards over manifests, offline, for CI pipelines.

The same engine the admission webhook runs (:mod:`qcdr_admission.pss`), over YAML or JSON files:
multi-document files, ``kind: List`` documents, and directories walked recursively.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from qcdr_admission.pss import (
    LEVELS,
    MalformedObjectError,
    Violation,
    evaluate,
    parse_version,
    pod_path,
    pod_spec_of,
)
from qcdr_common.config_files import positioned, yaml_error_text

admission_app = typer.Typer(
    name="admission", help="Admission checks, offline: the Pod Security Standards.", no_args_is_help=True
)

SUFFIXES = (".yaml", ".yml", ".json")
CHECK_LEVELS = tuple(level for level in LEVELS if level != "privileged")
# CSafeLoader where libyaml is built; a value it cannot build is a YAML error at its position
Loader: Any = positioned(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclass
class Verdict:
    file: str
    kind: str
    name: str | None
    violations: list[Violation]

    def document(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "name": self.name,
            "allowed": not self.violations,
            "violations": [v.check for v in self.violations],
            "messages": [v.message for v in self.violations],
        }


@dataclass
class Report:
    verdicts: list[Verdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


def manifest_files(path: Path) -> list[Path]:
    """``path`` itself, or the YAML/JSON files below it (hidden directories are not entered)."""
    if not path.is_dir():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts[:-1])
    )


def documents(path: Path) -> list[Any]:
    """Every document of a file; ``kind: List`` documents are replaced by their items."""
    loaded = [
        doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=Loader) if doc is not None
    ]
    expanded: list[Any] = []
    for doc in loaded:
        items = doc.get("items") if isinstance(doc, Mapping) and doc.get("kind") == "List" else None
        expanded.extend(items if isinstance(items, list) else [doc])
    return expanded


def _label(doc: Mapping[str, Any]) -> tuple[str, str | None]:
    kind = doc.get("kind")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return (kind if isinstance(kind, str) else "?"), (name if isinstance(name, str) else None)


def check_file(path: Path, level: str, version: str, report: Report) -> None:
    try:
        docs = documents(path)
    except yaml.YAMLError as exc:  # not PyYAML's text: it quotes the line (a Secret's data?)
        report.errors.append(f"{path}: {yaml_error_text(exc)}")
        return
    except (OSError, UnicodeDecodeError) as exc:
        reason = str(exc).replace("\n", " ")
        report.errors.append(f"{path}: unreadable: {reason}")
        return
    for number, doc in enumerate(docs, start=1):
        if not isinstance(doc, Mapping):
            report.errors.append(
                f"{path}: document {number} is not a Kubernetes object ({type(doc).__name__})"
            )
            continue
        kind, name = _label(doc)
        try:
            parts = pod_spec_of(doc)
            if parts is None:
                report.skipped += 1
                continue
            try:
                violations = evaluate(*parts, level, version)
            except MalformedObjectError as exc:
                raise exc.under(pod_path(kind)) from None
        except MalformedObjectError as exc:
            report.errors.append(f"{path}: document {number} ({kind}/{name or '?'}): malformed: {exc}")
            continue
        report.verdicts.append(Verdict(str(path), kind, name, violations))


def _print_human(report: Report, level: str, version: str) -> None:
    for verdict in report.verdicts:
        label = f"{verdict.kind}/{verdict.name or '?'}"
        if not verdict.violations:
            typer.echo(f"allowed  {verdict.file}  {label}")
            continue
        typer.echo(f"DENIED   {verdict.file}  {label}")
        for violation in verdict.violations:
            typer.echo(f"  - {violation.check}: {violation.message}")
    denied = sum(1 for v in report.verdicts if v.violations)
    typer.echo(
        f"{len(report.verdicts)} workloads checked at {level} {version}: "
        f"{len(report.verdicts) - denied} allowed, {denied} denied; "
        f"{report.skipped} other objects skipped"
    )


def _iter_files(paths: list[Path], report: Report) -> Iterator[Path]:
    for path in paths:
        if not path.exists():
            report.errors.append(f"{path}: no such file or directory")
            continue
        files = manifest_files(path)
        if not files:
            report.errors.append(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
        yield from files


@admission_app.command("check")
def check(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="FILE|DIR...", help="Manifests: YAML/JSON files, or directories to walk."),
    ],
    level: Annotated[str, typer.Option(help="Pod Security Standard: baseline or restricted.")] = "restricted",
    version: Annotated[
        str, typer.Option(help="Policy version: latest, or a pinned v1.N as in the namespace label.")
    ] = "latest",
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line per workload: file, kind, name, allowed, violations (check ids), "
            "messages.",
        ),
    ] = False,
) -> None:
    """Check the pods of manifests (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
    ReplicationControllers, Jobs, CronJobs) against a Pod Security Standard; other kinds are
    skipped.

    Exit codes: 0 all allowed, 1 violations, 2 unreadable or malformed input or bad options.
    """
    if level not in CHECK_LEVELS:
        _fail(f"--level must be baseline or restricted (got {level!r})")
    try:
        parse_version(version)
    except ValueError as exc:
        _fail(f"--version: {exc}")
    report = Report()
    for path in _iter_files(paths, report):
        check_file(path, level, version, report)
    if json_out:
        for verdict in report.verdicts:
            typer.echo(json.dumps(verdict.document()))
    else:
        _print_human(report, level, version)
    for error in report.errors:
        typer.echo(f"qcdr: error: {error}", err=True)
    if report.errors:
        raise typer.Exit(2)
    raise typer.Exit(1 if any(v.violations for v in report.verdicts) else 0)


def _fail(message: str) -> None:
    typer.echo(f"qcdr: error: {message}", err=True)
    raise typer.Exit(2)
