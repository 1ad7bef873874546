"""Human-readable run summary, in the shape of the original tool's example output."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.text import Text

from qcdr.pipeline import RunReport

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _print(console: Console, *parts: str | tuple[str, str]) -> None:
    """One line of text, parts optionally styled. Never Rich markup: categories, feed names, reasons
    and paths come from findings, feeds and flags, and a '[/x]' in one raised MarkupError, which
    ended the run after the files were written (a controller too, until the finding left the window)."""
    console.print(Text.assemble(*parts), highlight=False)


def _fmt_hours(hours: float) -> str:
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def _reason_kind(reason: str) -> str:
    """A reason without the offending value, so that one kind of fault is counted once
    ("timestamp '2026-13-45T99:99:99Z' is not ISO 8601" -> "timestamp '…' is not ISO 8601")."""
    return _QUOTED.sub("'…'", reason)


def print_report(report: RunReport, console: Console, *, hours: float, output: Path) -> None:
    gen = report.generation
    src = report.source
    _print(console, f"=== Policy Generation Run: {report.started_at:%Y-%m-%dT%H:%M:%SZ} ===\n")
    _print(console, f"Fetching CDR events (last {_fmt_hours(hours)})...")
    total = f" of {src.reported_total} reported" if src.reported_total is not None else ""
    _print(
        console,
        f"Found {src.fetched} events{total} ({src.pages} pages, {src.retries} retries, "
        f"{src.window_splits} window splits)",
    )
    for warning in src.warnings:
        _print(console, "  ", ("warning:", "yellow"), f" {warning}")
    if report.malformed:
        reasons = Counter(_reason_kind(m.reason) for m in report.malformed)
        shown = reasons.most_common(5)
        detail = ", ".join(f"{r} ({n})" for r, n in shown)
        rest = len(report.malformed) - sum(n for _, n in shown)
        if rest:  # the counts add up to the total; --json lists every one
            detail += f", {rest} other"
        _print(console, f"Skipped {len(report.malformed)} malformed findings: {detail}")
    if report.already_known:
        _print(console, f"{report.already_known} findings were already known from earlier runs")

    categories: Counter[str] = Counter()
    for fam in gen.families.values():
        categories.update(fam.categories)
    for group in gen.unmapped.values():
        categories[group.category] += group.count
    if categories:
        _print(console, "\nEvent categories:")
        for cat, n in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0])):
            _print(console, f"  {cat}: {n}")

    _print(console, "\nGenerating behavior-based policies...")
    behavior_files = sorted({d.filename for f in gen.families.values() for d in f.documents})
    n_docs = sum(len(f.documents) for f in gen.families.values())
    _print(
        console,
        f"Generated {len(behavior_files)} behavior policy files ({n_docs} policies, "
        f"{len(gen.families)} families)",
    )
    verb = "Would create" if not report.written else "Created"
    for name in behavior_files:
        _print(console, f"  {verb}: {output / name}")
    for group in gen.unmapped.values():
        _print(console, f"  Unmapped: {group.category} ({group.count}): {group.reason}")
    for refusal in gen.refusals:
        _print(
            console, "  ", (f"{refusal.outcome}", "yellow"), f": {refusal.name}: {'; '.join(refusal.reasons)}"
        )

    _print(console, "\nExtracting network indicators from events...")
    iocs = gen.iocs
    _print(console, f"Extracted: {len(iocs.ips)} IPs, {len(iocs.domains)} domains, {len(iocs.ports)} ports")
    if iocs.excluded:
        _print(console, "  Not blocked: " + ", ".join(f"{k} ({v})" for k, v in sorted(iocs.excluded.items())))
    for name in sorted({d.filename for d in gen.network_documents}):
        _print(console, f"  {verb}: {output / name}")
    _print_reputation(report, console)
    if report.intel is not None:
        _print_intel(report, console, output, verb)
    if report.dns is not None:
        _print_dns(report, console, output, verb)
    for path in report.removed:
        _print(console, f"  Removed stale: {path}")
    if report.apply is not None:
        a = report.apply
        _print(
            console,
            f"\nApplied to cluster: {len(a.get('created', []))} created, {len(a.get('configured', []))} "
            f"configured, {len(a.get('unchanged', []))} unchanged, {len(a.get('pruned', []))} pruned, "
            f"{len(a.get('failed', []))} failed",
        )
        for failure in a.get("failed", []):
            _print(console, "  ", ("failed", "red"), f": {failure}")
    _print(console, "\nDone.")


def _print_reputation(report: RunReport, console: Console) -> None:
    outcome = report.reputation
    if outcome is None or (outcome.report is None and report.intel is None):
        return  # no key and no --threat-intel: nothing was asked of reputation
    _print(console, f"  {outcome.message}")
    for line in outcome.report.messages if outcome.report else []:
        _print(console, "  ", (line, "yellow"))
    for ip, why in sorted(outcome.unblocked.items()):
        _print(console, f"  Not blocked: {ip} (AbuseIPDB {why})")


def _print_intel(report: RunReport, console: Console, output: Path, verb: str) -> None:
    intel = report.intel
    assert intel is not None
    _print(console, "\nLoading threat intelligence feeds...")
    for feed in intel.feeds:
        status = feed.status.value
        if feed.status.value in ("failed", "disabled"):
            _print(console, (f"{status:>12}", "red"), f" {feed.name}: {feed.error or 'no copy'}")
            continue
        counts = f"{feed.domains} domains" if feed.domains else f"{feed.ips} IPs"
        counts += f" and {feed.cidrs} CIDRs" if feed.cidrs else ""
        extra = f", {feed.garbage} unparsable lines skipped" if feed.garbage else ""
        _print(console, f"Loaded {counts} from {feed.name} ({status}{extra})")
    for warning in intel.warnings:
        _print(console, "  ", ("warning:", "yellow"), f" {warning}")
    bl = intel.blocklist
    _print(console, f"Known bad IPs: {intel.known_bad_ips}")
    where = f"{intel.groups} group{'s' if intel.groups != 1 else ''}" if intel.groups else "inline policies"
    _print(
        console,
        f"{bl.input_ips} IPs and {bl.input_cidrs} CIDRs → {len(bl.cidrs)} CIDRs in {where}"
        f" ({bl.excluded_never_block} never-block entries removed)",
    )
    if bl.dropped_indicators:
        _print(
            console,
            "  ",
            (
                f"Size limit {bl.max_cidrs} CIDRs: {bl.dropped_indicators} lowest-confidence "
                f"indicators ({bl.dropped_cidrs} CIDRs) left out",
                "yellow",
            ),
        )
    if intel.expired:
        _print(console, f"  {intel.expired} indicators expired (not in any feed for longer than the TTL)")
    for name in sorted({d.filename for d in intel.documents}):
        _print(console, f"  {verb}: {output / name}")


def _print_dns(report: RunReport, console: Console, output: Path, verb: str) -> None:
    dns = report.dns
    assert dns is not None
    r = dns.report
    resolved = sum(1 for v in r.resolved.values() if v)
    _print(console, "\nResolving blocked domains (Cilium cannot deny by name)...")
    _print(
        console,
        f"{dns.ioc_names} IOC domains and {dns.listed} names on the domain feeds: {resolved} resolved, "
        f"{len(r.failed)} failed; "
        f"{dns.addresses} addresses denied ({r.expired} expired since the last run)",
    )
    dropped = sum(len(v) for v in r.dropped.values())
    if dropped:
        _print(console, f"  {dropped} never-block addresses left out (sinkholes, private ranges)")
    for warning in dns.warnings:
        _print(console, "  ", ("warning:", "yellow"), f" {warning}")
    for name in sorted({d.filename for d in dns.documents}):
        _print(console, f"  {verb}: {output / name}")
