"""Write deterministic demo Qualys CDR findings (JSON array, one finding per line).

    uv run python examples/generate_findings.py             # 600 findings -> examples/findings.json
    uv run python examples/generate_findings.py --count 100000 --output /tmp/f.json
    uv run python examples/generate_findings.py --now 2026-03-01T00:00:00Z --output -

The committed ``examples/findings.json`` is made with ``--now 2026-03-01T00:00:00Z`` (the default
seed and count) so it never changes; serve it with ``rebase_to_now`` to make it look current.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from qcdr_ingest.qualys.demo_data import DEFAULT_COUNT, DEFAULT_SEED, generate_findings

HERE = Path(__file__).resolve().parent


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def render(findings: list[object]) -> str:
    # One finding per line: compact, yet diffs stay readable.
    lines = ",\n".join(json.dumps(f, separators=(",", ":"), ensure_ascii=False) for f in findings)
    return f"[\n{lines}\n]\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="findings to write (default 600)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--now",
        type=_moment,
        default=None,
        help="end of the 24 h the findings spread over (ISO 8601; default: now, rounded down to the hour)",
    )
    parser.add_argument("--malformed-ratio", type=float, default=0.02)
    parser.add_argument("--output", default=str(HERE / "findings.json"), help="file, or - for stdout")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must not be negative")
    findings = generate_findings(args.count, args.seed, args.now, malformed_ratio=args.malformed_ratio)
    text = render(findings)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(findings)} findings to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
