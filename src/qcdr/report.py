"""Human-readable run summary, in the shape of the original tool's example output."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from rich.console import Console

from qcdr.pipeline import RunReport

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _fmt_hours(hours: float) -> str:
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def _reason_kind(reason: str) -> str:
    """A reason without the offending value, so that one kind of fault is counted once
    ("timestamp '2026-13-45T99:99:99Z' is not ISO 8601" -> "timestamp '…' is not ISO 8601")."""
    return _QUOTED.sub("'…'", reason)


def print_report(report: RunReport, console: Console, *, hours: float, output: Path) -> None:
    gen = report.generation
    src = report.source
    console.print(f"=== Policy Generation Run: {report.started_at:%Y-%m-%dT%H:%M:%SZ} ===\n", highlight=False)
    console.print(f"Fetching CDR events (last {_fmt_hours(hours)})...", highlight=False)
    total = f" of {src.reported_total} reported" if src.reported_total is not None else ""
    console.print(
        f"Found {src.fetched} events{total} ({src.pages} pages, {src.retries} retries, "
        f"{src.window_splits} window splits)",
        highlight=False,
    )
    for warning in src.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    if report.malformed:
        reasons = Counter(_reason_kind(m.reason) for m in report.malformed)
        shown = reasons.most_common(5)
        detail = ", ".join(f"{r} ({n})" for r, n in shown)
        rest = len(report.malformed) - sum(n for _, n in shown)
        if rest:  # the counts add up to the total; --json lists every one
            detail += f", {rest} other"
        console.print(f"Skipped {len(report.malformed)} malformed findings: {detail}", highlight=False)
    if report.already_known:
        console.print(
            f"{report.already_known} findings were already known from earlier runs", highlight=False
        )

    categories: Counter[str] = Counter()
    for fam in gen.families.values():
        categories.update(fam.categories)
    for group in gen.unmapped.values():
        categories[group.category] += group.count
    if categories:
        console.print("\nEvent categories:")
        for cat, n in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0])):
            console.print(f"  {cat}: {n}", highlight=False)

    console.print("\nGenerating behavior-based policies...")
    behavior_files = sorted({d.filename for f in gen.families.values() for d in f.documents})
    n_docs = sum(len(f.documents) for f in gen.families.values())
    console.print(
        f"Generated {len(behavior_files)} behavior policy files ({n_docs} policies, "
        f"{len(gen.families)} families)",
        highlight=False,
    )
    verb = "Would create" if not report.written else "Created"
    for name in behavior_files:
        console.print(f"  {verb}: {output / name}", highlight=False)
    for group in gen.unmapped.values():
        console.print(f"  Unmapped: {group.category} ({group.count}): {group.reason}", highlight=False)
    for refusal in gen.refusals:
        console.print(
            f"  [yellow]{refusal.outcome}[/]: {refusal.name}: {'; '.join(refusal.reasons)}", highlight=False
        )

    console.print("\nExtracting network indicators from events...")
    iocs = gen.iocs
    console.print(
        f"Extracted: {len(iocs.ips)} IPs, {len(iocs.domains)} domains, {len(iocs.ports)} ports",
        highlight=False,
    )
    if iocs.excluded:
        console.print(
            "  Not blocked: " + ", ".join(f"{k} ({v})" for k, v in sorted(iocs.excluded.items())),
            highlight=False,
        )
    for name in sorted({d.filename for d in gen.network_documents}):
        console.print(f"  {verb}: {output / name}", highlight=False)
    _print_reputation(report, console)
    if report.intel is not None:
        _print_intel(report, console, output, verb)
    if report.dns is not None:
        _print_dns(report, console, output, verb)
    for path in report.removed:
        console.print(f"  Removed stale: {path}", highlight=False)
    if report.apply is not None:
        a = report.apply
        console.print(
            f"\nApplied to cluster: {len(a.get('created', []))} created, {len(a.get('configured', []))} "
            f"configured, {len(a.get('unchanged', []))} unchanged, {len(a.get('pruned', []))} pruned, "
            f"{len(a.get('failed', []))} failed",
            highlight=False,
        )
        for failure in a.get("failed", []):
            console.print(f"  [red]failed[/]: {failure}", highlight=False)
    console.print("\nDone.")


def _print_reputation(report: RunReport, console: Console) -> None:
    outcome = report.reputation
    if outcome is None or (outcome.report is None and report.intel is None):
        return  # no key and no --threat-intel: nothing was asked of reputation
    console.print(f"  {outcome.message}", highlight=False)
    for line in outcome.report.messages if outcome.report else []:
        console.print(f"  [yellow]{line}[/]", highlight=False)
    for ip, why in sorted(outcome.unblocked.items()):
        console.print(f"  Not blocked: {ip} (AbuseIPDB {why})", highlight=False)


def _print_intel(report: RunReport, console: Console, output: Path, verb: str) -> None:
    intel = report.intel
    assert intel is not None
    console.print("\nLoading threat intelligence feeds...")
    for feed in intel.feeds:
        status = feed.status.value
        if feed.status.value in ("failed", "disabled"):
            console.print(f"[red]{status:>12}[/] {feed.name}: {feed.error or 'no copy'}", highlight=False)
            continue
        counts = f"{feed.domains} domains" if feed.domains else f"{feed.ips} IPs"
        counts += f" and {feed.cidrs} CIDRs" if feed.cidrs else ""
        extra = f", {feed.garbage} unparsable lines skipped" if feed.garbage else ""
        console.print(f"Loaded {counts} from {feed.name} ({status}{extra})", highlight=False)
    for warning in intel.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    bl = intel.blocklist
    console.print(f"Known bad IPs: {intel.known_bad_ips}", highlight=False)
    where = f"{intel.groups} group{'s' if intel.groups != 1 else ''}" if intel.groups else "inline policies"
    console.print(
        f"{bl.input_ips} IPs and {bl.input_cidrs} CIDRs → {len(bl.cidrs)} CIDRs in {where}"
        f" ({bl.excluded_never_block} never-block entries removed)",
        highlight=False,
    )
    if bl.dropped_indicators:
        console.print(
            f"  [yellow]Size limit {bl.max_cidrs} CIDRs: {bl.dropped_indicators} lowest-confidence "
            f"indicators ({bl.dropped_cidrs} CIDRs) left out[/]",
            highlight=False,
        )
    if intel.expired:
        console.print(
            f"  {intel.expired} indicators expired (not in any feed for longer than the TTL)", highlight=False
        )
    for name in sorted({d.filename for d in intel.documents}):
        console.print(f"  {verb}: {output / name}", highlight=False)


def _print_dns(report: RunReport, console: Console, output: Path, verb: str) -> None:
    dns = report.dns
    assert dns is not None
    r = dns.report
    resolved = sum(1 for v in r.resolved.values() if v)
    console.print("\nResolving blocked domains (Cilium cannot deny by name)...")
    console.print(
        f"{dns.ioc_names} IOC domains and {dns.listed} names on the domain feeds: {resolved} resolved, "
        f"{len(r.failed)} failed; "
        f"{dns.addresses} addresses denied ({r.expired} expired since the last run)",
        highlight=False,
    )
    dropped = sum(len(v) for v in r.dropped.values())
    if dropped:
        console.print(
            f"  {dropped} never-block addresses left out (sinkholes, private ranges)", highlight=False
        )
    for warning in dns.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    for name in sorted({d.filename for d in dns.documents}):
        console.print(f"  {verb}: {output / name}", highlight=False)
