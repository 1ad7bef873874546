"""One cycle of the main job, in one process: fetch → normalize → generate → check → write → apply.

The same domain functions the services use, called in the same order, with state in files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_ingest.qualys.normalize import MalformedRecord, normalize_all
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import GenerationConfig
from qcdr_response.policies.generate import GenerationResult, PolicyGenerator

from qcdr.defaults import DEFAULT_STATE_DIR
from qcdr.dns_step import DnsBlockOptions, DnsBlockResult, run_resolve_deny
from qcdr.intel_step import (
    IntelOptions,
    IntelResult,
    ReputationOutcome,
    check_reputation,
    run_threat_intel,
)
from qcdr.output import render_files, write_files
from qcdr.sources import FindingsSource, SourceResult
from qcdr.state import StateDir, fetch_window, merge_events

OVERLAP = timedelta(minutes=15)


@dataclass
class RunOptions:
    hours: float = 24.0
    output: Path = Path("./policies")
    state_dir: Path | None = None
    dry_run: bool = False
    cluster: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    intel: IntelOptions | None = None  # --threat-intel
    dns: DnsBlockOptions | None = None  # --dns-resolve-deny (needs --threat-intel: its domain feeds)
    reputation_threshold: int = 50  # AbuseIPDB, when ABUSEIPDB_API_KEY is set

    @property
    def intel_state_dir(self) -> Path:
        return self.state_dir or DEFAULT_STATE_DIR


@dataclass
class RunReport:
    started_at: datetime
    window: tuple[datetime, datetime]
    source: SourceResult
    normalized: int
    malformed: list[MalformedRecord]
    already_known: int
    events_in_window: int
    generation: GenerationResult
    files: dict[str, str]
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    intel: IntelResult | None = None
    dns: DnsBlockResult | None = None
    reputation: ReputationOutcome | None = None
    apply: dict[str, Any] | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        gen = self.generation
        families = {
            name: {
                "findings": f.finding_count,
                "categories": dict(sorted(f.categories.items())),
                "policies": [
                    {
                        "kind": d.kind,
                        "name": d.name,
                        "namespace": d.namespace,
                        "file": d.filename,
                        "finding_count": d.finding_count,
                        "content_hash": d.content_hash,
                    }
                    for d in f.documents
                ],
            }
            for name, f in gen.families.items()
        }
        mapped = sum(f.finding_count for f in gen.families.values())
        unmapped = sum(u.count for u in gen.unmapped.values())
        return {
            "started_at": self.started_at.isoformat(),
            "window": {"start": self.window[0].isoformat(), "end": self.window[1].isoformat()},
            "source": self.source.as_dict(),
            "fetched": self.source.fetched,
            "reported_total": self.source.reported_total,
            "normalized": self.normalized,
            "malformed": {
                "count": len(self.malformed),
                "items": [{"id": m.id_or_index, "reason": m.reason} for m in self.malformed[:100]],
            },
            "already_known": self.already_known,
            "events_in_window": self.events_in_window,
            "families": families,
            "unmapped": {c: {"count": u.count, "reason": u.reason} for c, u in gen.unmapped.items()},
            "totals": {
                "mapped": mapped,
                "unmapped": unmapped,
                "malformed": len(self.malformed),
                "accounted": mapped + unmapped + len(self.malformed),
            },
            "iocs": {
                "ips": len(gen.iocs.ips),
                "ports": sorted(gen.iocs.ports),
                "domains": sorted(gen.iocs.domains),
                "excluded": dict(sorted(gen.iocs.excluded.items())),
            },
            "network_policies": [
                {"kind": d.kind, "name": d.name, "file": d.filename, "finding_count": d.finding_count}
                for d in gen.network_documents
            ],
            "refusals": [
                {"name": r.name, "family": r.family, "outcome": r.outcome, "reasons": r.reasons}
                for r in gen.refusals
            ],
            "threat_intel": self.intel.as_dict() if self.intel else None,
            "dns_resolve_deny": self.dns.as_dict() if self.dns else None,
            "reputation": self.reputation.as_dict() if self.reputation else None,
            "files": sorted(self.files),
            "written": [str(p) for p in self.written],
            "removed": [str(p) for p in self.removed],
            "dry_run": not self.written and bool(self.files),
            "apply": self.apply,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


ProgressFn = Callable[[int, int | None], None]


async def run_cycle(
    options: RunOptions,
    source: FindingsSource,
    *,
    now: datetime | None = None,
    progress: ProgressFn | None = None,
) -> RunReport:
    t0 = time.perf_counter()
    now = now or datetime.now(UTC)
    state = StateDir(options.state_dir) if options.state_dir else None
    watermark = state.watermark() if state else None
    start, end = fetch_window(now, options.hours, watermark, OVERLAP)

    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now_t = time.perf_counter()
        timings[name] = now_t - mark
        mark = now_t

    fetched = await source.fetch(start, end, progress=progress)
    lap("fetch")
    # Raw findings are released as they are normalized, and events keep no copy of them: policy
    # generation never reads ``raw``, and at 100k findings it is most of the memory.
    normalized = normalize_all(fetched.drain(), cluster=options.cluster, keep_raw=False)
    malformed = [MalformedRecord(ref, reason) for ref, reason in fetched.rejected] + list(
        normalized.malformed
    )
    malformed.sort(key=lambda m: str(m.id_or_index))
    events: list[SecurityEvent] = list(normalized.events)
    lap("normalize")
    already_known = 0
    if state:
        stored = state.load_events()
        events, already_known = merge_events(stored, events, keep_after=now - timedelta(hours=options.hours))

    generator = PolicyGenerator(options.generation, checker=default_checker(options.generation))
    result = generator.generate(events)
    lap("generate")
    intel = None
    if options.intel is not None:
        intel = await run_threat_intel(options.intel, now)
        intel.documents = generator.check_documents(intel.documents, result.refusals)
        lap("intel")
    dns = None
    if options.dns is not None:
        feeds = intel.domain_feeds if intel is not None else []
        dns = await run_resolve_deny(options.dns, feeds, sorted(result.iocs.domains))
        dns.documents = generator.check_documents(dns.documents, result.refusals)
        lap("dns")
    reputation = await check_reputation(
        result.iocs,
        options.reputation_threshold,
        options.intel_state_dir,
        intel.indicators if intel else None,
    )
    if reputation.unblocked:
        result.network_documents = generator.network_documents(result.iocs, result.refusals)
    if reputation.report is not None:
        lap("reputation")
    documents = result.documents + (intel.documents if intel else []) + (dns.documents if dns else [])
    rendered = render_files(documents)
    written: list[Path] = []
    removed: list[Path] = []
    if not options.dry_run:
        written, removed = write_files(options.output, rendered)
        iocs_path = options.output / "iocs.json"
        iocs_path.write_bytes(
            orjson.dumps(_iocs_document(result, intel, reputation), option=orjson.OPT_INDENT_2) + b"\n"
        )
        written.append(iocs_path)
        if state:
            state.save_events(events)
            state.save_watermark(end)
    lap("write")
    return RunReport(
        started_at=now,
        window=(start, end),
        source=fetched,
        normalized=len(normalized.events),
        malformed=malformed,
        already_known=already_known,
        events_in_window=len(events),
        generation=result,
        files=rendered,
        written=written,
        removed=removed,
        seconds=time.perf_counter() - t0,
        timings=timings,
        intel=intel,
        dns=dns,
        reputation=reputation,
    )


def _iocs_document(
    result: GenerationResult, intel: IntelResult | None, reputation: ReputationOutcome
) -> dict[str, Any]:
    """``iocs.json``: the indicators with their provenance, which feeds list them and their reputation."""
    doc = result.iocs.as_dict()
    scores = reputation.report.results if reputation.report else {}
    for item in doc["ips"]:
        ip = item["value"]
        if intel is not None:
            item["feeds"] = intel.indicators.feeds_for(ip)
        if ip in scores:
            item["abuseipdb_score"] = scores[ip].score
    doc["not_blocked_by_reputation"] = reputation.unblocked
    return doc
