"""docs/METRICS.md names only metrics the code defines: a renamed or never-built metric in the
table (the seed-name map once listed ``qualys_admission_requests_total``, which nothing exported)
fails here instead of misleading a dashboard author."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "services", ROOT / "libs", ROOT / "src"]
# a full metric name in backticks, optionally with its labels: `qcdr_x_total{a,b}`
NAME = re.compile(r"`((?:qcdr|qualys)_[a-z0-9_]+)(?:\{[^`]*\})?`")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def defined_in_code() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for base in SOURCES
        for p in base.rglob("*.py")
        if ".venv" not in p.parts and "_pb2" not in p.name
    )


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def documented() -> list[str]:
    text = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")
    # the seed-name table's first column holds the original's names, which qcdr need not define
    rows = []
    for line in text.splitlines():
        if line.startswith("| `qualys_") and "|" in line[1:]:
            cells = line.split("|")
            rows.append("|".join(cells[2:]))
        else:
            rows.append(line)
    return sorted({m for line in rows for m in NAME.findall(line)})


def test_every_documented_metric_is_defined() -> None:
    code = defined_in_code()
    names = documented()
    assert len(names) > 40
    missing = [n for n in names if f'"{base_name(n)}"' not in code and f'"{n}"' not in code]
    assert not missing, f"docs/METRICS.md names metrics no code defines: {missing}"
