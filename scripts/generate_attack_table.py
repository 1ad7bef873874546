"""Regenerate the ATT&CK technique table analysis ships (``qcdr_analysis/attack/techniques_v18_1.json``).

The source is MITRE's ATT&CK v18.1 enterprise data as tabulated in the team's corpus
(``../shared/corpora/mitre-attack/enterprise_techniques_v18.1.csv`` and the tactics CSV next to
it); nothing is typed by hand. Run from the repository root::

    uv run python scripts/generate_attack_table.py            # write the table
    uv run python scripts/generate_attack_table.py --check    # exit 1 if the committed one differs

The output is deterministic (sorted by technique id, fixed key order, one technique per line), so
a regenerated table diffs cleanly against the committed one and a test can compare them byte for
byte.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "mitre-attack"
OUTPUT = ROOT / "services/analysis/src/qcdr_analysis/attack/techniques_v18_1.json"
VERSION = "18.1"
TECHNIQUES_CSV = f"enterprise_techniques_v{VERSION}.csv"
TACTICS_CSV = f"enterprise_tactics_v{VERSION}.csv"


def _flag(value: str, column: str, technique: str) -> bool:
    if value not in ("True", "False"):
        raise ValueError(f"{TECHNIQUES_CSV}: {technique}: {column} is {value!r}, not True/False")
    return value == "True"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def build(corpus: Path) -> dict[str, Any]:
    """The table as a JSON-able dict, from the two CSVs in ``corpus``."""
    with (corpus / TACTICS_CSV).open(encoding="utf-8", newline="") as handle:
        tactics = {
            row["shortname"]: {"id": row["tactic_id"], "name": row["name"]} for row in csv.DictReader(handle)
        }
    techniques: dict[str, dict[str, Any]] = {}
    with (corpus / TECHNIQUES_CSV).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            tid = row["technique_id"]
            if tid in techniques:
                raise ValueError(f"{TECHNIQUES_CSV}: {tid} appears twice")
            unknown = [t for t in _split(row["tactics"]) if t not in tactics]
            if unknown:
                raise ValueError(f"{TECHNIQUES_CSV}: {tid}: unknown tactics {unknown}")
            techniques[tid] = {
                "name": row["name"],
                "tactics": _split(row["tactics"]),
                "platforms": sorted(_split(row["platforms"])),
                "subtechnique": _flag(row["is_subtechnique"], "is_subtechnique", tid),
                "revoked": _flag(row["revoked"], "revoked", tid),
                "deprecated": _flag(row["deprecated"], "deprecated", tid),
            }
    return {
        "attack_version": VERSION,
        "source": f"MITRE ATT&CK v{VERSION} enterprise ({TECHNIQUES_CSV}, {TACTICS_CSV})",
        "regenerate": "uv run python scripts/generate_attack_table.py",
        "tactics": dict(sorted(tactics.items())),
        "techniques": dict(sorted(techniques.items())),
    }


def render(table: dict[str, Any]) -> str:
    """One technique per line: readable diffs without a 40,000-line file."""
    head = {k: v for k, v in table.items() if k != "techniques"}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False, sort_keys=True)},")
    lines.append('  "techniques": {')
    items = list(table["techniques"].items())
    for i, (tid, entry) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(tid)}: {json.dumps(entry, ensure_ascii=False)}{comma}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder with the ATT&CK CSVs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare with --output instead of writing")
    args = parser.parse_args(argv)
    if not (args.corpus / TECHNIQUES_CSV).is_file():
        print(f"error: {args.corpus / TECHNIQUES_CSV} not found", file=sys.stderr)
        return 2
    table = build(args.corpus)
    text = render(table)
    if args.check:
        current = args.output.read_text("utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run {table['regenerate']}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, "utf-8")
    # ATT&CK's terms of use ask that copies carry MITRE's licence: it travels with the table, as is
    licence = args.corpus / "LICENSE.txt"
    if licence.is_file():
        (args.output.parent / "LICENSE-MITRE-ATTACK.txt").write_bytes(licence.read_bytes())
    print(f"wrote {args.output} ({len(table['techniques'])} techniques)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
