"""``qcdr intel``: look an address up in the threat-intel indicator set and the reputation cache."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console

from qcdr.defaults import DEFAULT_STATE_DIR

if TYPE_CHECKING:
    from qcdr_ingest.intel.indicators import IndicatorSet

intel_app = typer.Typer(name="intel", help="Threat-intel indicators and IP reputation.", no_args_is_help=True)


def _load(state_dir: Path, feeds: Path | None, refresh: bool, never_block: list[str]) -> IndicatorSet:
    # the feed machinery is imported by the command that needs it, not by every `qcdr` start
    from qcdr_ingest.intel.netsets import NeverBlock

    from qcdr.intel_step import INDICATORS_FILE, IntelError, IntelOptions, load_indicators, run_threat_intel

    saved = state_dir / "intel" / INDICATORS_FILE
    if refresh or not saved.exists():
        options = IntelOptions(
            state_dir=state_dir, feeds_file=feeds, never_block=tuple(never_block), ttl=timedelta(days=7)
        )
        result = asyncio.run(run_threat_intel(options, datetime.now(UTC)))
        if result.unavailable:  # "not listed" would be a guess
            raise IntelError(
                f"no feed could be read and none is cached ({', '.join(result.unavailable)}): "
                "cannot tell whether the address is listed"
            )
        return result.indicators
    return load_indicators(saved, NeverBlock.build(never_block))


def lookup_document(ip: str, indicators: IndicatorSet, reputation: Any) -> dict[str, Any]:
    listed = [
        {
            "indicator": ind.value,
            "never_block": ind.never_block,
            "confidence": ind.confidence,
            "listings": [
                {
                    "feed": li.feed,
                    "category": li.category,
                    "first_seen": li.first_seen.isoformat(),
                    "last_seen": li.last_seen.isoformat(),
                    "score": li.score,
                }
                for li in ind.listings
            ],
        }
        for ind in indicators.indicators(ip)
    ]
    doc: dict[str, Any] = {
        "ip": ip,
        "blocked": indicators.contains(ip),
        "feeds": indicators.feeds_for(ip),
        "indicators": listed,
        "abuseipdb": None,
    }
    if reputation is not None:
        doc["abuseipdb"] = reputation.model_dump(mode="json")
    return doc


@intel_app.command()
def lookup(
    ip: Annotated[str, typer.Argument(help="An IPv4 or IPv6 address.")],
    state_dir: Annotated[Path, typer.Option(help="Where `qcdr run --threat-intel` keeps its state.")] = (
        DEFAULT_STATE_DIR
    ),
    feeds: Annotated[Path | None, typer.Option(help="Feeds YAML, for --refresh or a first fetch.")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch the feeds first.")] = False,
    never_block: Annotated[
        list[str] | None, typer.Option(help="Extra never-block CIDRs (repeatable).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Which feeds list IP, since when, whether it is blocked, and its cached AbuseIPDB reputation."""
    from qcdr_ingest.intel.state_files import FileReputationCache

    from qcdr.intel_step import IntelError

    err = Console(stderr=True, soft_wrap=True, markup=False)
    try:
        address = str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        err.print(f"qcdr: error: not an IP address: {ip!r}", highlight=False)
        raise typer.Exit(2) from None
    try:
        indicators = _load(state_dir, feeds, refresh, never_block or [])
    except (IntelError, ValueError, OSError) as exc:
        err.print(f"qcdr: error: {exc}", highlight=False)
        raise typer.Exit(1) from None
    cached = asyncio.run(FileReputationCache(state_dir / "intel").get_many([address]))
    doc = lookup_document(address, indicators, cached.get(address))
    out = Console(soft_wrap=True, markup=False)  # feed categories are free text: "c2[/x]" raised MarkupError
    if json_out:
        out.file.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    verdict = "blocked" if doc["blocked"] else "not blocked"
    out.print(f"{address}: {verdict}; listed by {len(doc['feeds'])} feeds", highlight=False)
    for ind in doc["indicators"]:
        note = " (never-block range: not blocked)" if ind["never_block"] else ""
        out.print(f"  {ind['indicator']} confidence {ind['confidence']}{note}", highlight=False)
        for li in ind["listings"]:
            out.print(
                f"    {li['feed']} ({li['category']}): first seen {li['first_seen']}, last seen "
                f"{li['last_seen']}",
                highlight=False,
            )
    rep = doc["abuseipdb"]
    if rep:
        out.print(
            f"  AbuseIPDB (cached {rep['checked_at']}): score {rep['score']}, {rep['total_reports']} reports",
            highlight=False,
        )
