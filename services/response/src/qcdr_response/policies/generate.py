"""The dispatcher: route findings to families, scope and name the policies, check every one.

Each family's findings are split by namespace. A namespace becomes a ``TracingPolicyNamespaced``
in that namespace (Tetragon then only looks at that namespace's pods); findings without a namespace
become one clusterwide ``TracingPolicy``. With ``--action Override`` the blocking selectors move into
separate ``-override`` policies, because one Override a node cannot attach fails the whole policy
there, and the audit policy should keep loading.

Every document is validated for the target versions and linted for blast radius. A validation
error is a generator bug: the document is dropped and reported. A lint refusal demotes the
document to audit (``Post``) and says why in an annotation and in the report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.policies.v1 import PolicyDocument, TargetVersions

from qcdr_response.policies import families as _families  # noqa: F401  (registers the generators)
from qcdr_response.policies import metadata as md
from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.config import EnforcementAction, GenerationConfig, OverrideHooks
from qcdr_response.policies.families.behaviour_anomaly import no_policy_reason
from qcdr_response.policies.family import GENERATORS, FamilyContext, FamilyGenerator, normalize_category
from qcdr_response.policies.iocs import IocSet, extract_iocs
from qcdr_response.policies.network import cilium_blocklist, tracing_blocklist

GENERATOR = "cdr"
ENFORCING_ACTIONS = frozenset({"Sigkill", "Override", "Signal", "NotifyEnforcer"})


@dataclass(frozen=True)
class CheckResult:
    errors: list[str] = field(default_factory=list)
    lint: list[str] = field(default_factory=list)


Checker = Callable[[dict[str, Any]], CheckResult]


@dataclass
class FamilyResult:
    name: str
    title: str
    finding_count: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    documents: list[PolicyDocument] = field(default_factory=list)


@dataclass
class UnmappedGroup:
    category: str
    count: int
    reason: str


@dataclass
class Refusal:
    name: str
    family: str
    outcome: str  # "demoted-to-audit" or "dropped"
    reasons: list[str]


@dataclass
class GenerationResult:
    families: dict[str, FamilyResult]
    unmapped: dict[str, UnmappedGroup]
    iocs: IocSet
    network_documents: list[PolicyDocument]
    refusals: list[Refusal]

    @property
    def documents(self) -> list[PolicyDocument]:
        docs = [d for f in self.families.values() for d in f.documents]
        return docs + self.network_documents


def route(event: SecurityEvent, generators: Sequence[FamilyGenerator]) -> FamilyGenerator | None:
    category = normalize_category(event.category)
    if no_policy_reason(category) is not None:
        return None  # a category no kernel selector can answer (its reason is recorded instead)
    best: tuple[float, int] = (0.0, 0)
    chosen = None
    for order, gen in enumerate(generators):
        score = gen.score(category, event.techniques)
        # Ties go to the earlier-registered family, so routing never depends on set order.
        if score > best[0]:
            best, chosen = (score, order), gen
    return chosen


def _unmapped_reason(category: str, techniques: Iterable[str]) -> str:
    techs = sorted(set(techniques))
    if techs:
        return f"no generator answers category {category!r} or techniques {', '.join(techs)}"
    return f"no generator answers category {category!r} and the findings carry no ATT&CK technique"


def _family_filename(family: str, config: GenerationConfig) -> str:
    return f"cdr-block-{family}-{config.run_date:%Y%m%d}.yaml"


def _policy_name(family: str, namespace: str | None, override: bool) -> str:
    name = f"cdr-block-{family}" + ("" if namespace else "-clusterwide")
    return md.dns_name(name + ("-override" if override else ""))


def _override_hooks(kprobes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only hooks the kernel lets us override (syscalls and LSM hooks) and their Override selectors."""
    out = []
    for hook in kprobes:
        call = str(hook.get("call", ""))
        if not (call.startswith("security_") or (call.startswith("sys_") and hook.get("syscall"))):
            continue
        selectors = [
            s for s in hook["selectors"] if any(a["action"] == "Override" for a in s["matchActions"])
        ]
        if selectors:
            out.append({**hook, "selectors": selectors})
    return out


def override_spec(hooks: list[dict[str, Any]], config: GenerationConfig) -> tuple[dict[str, Any], list[str]]:
    """The ``-override`` policy's spec for the configured hook kind (``{}`` when nothing is left),
    and the calls left out because BPF LSM has no equivalent."""
    if config.override_hooks is OverrideHooks.KPROBES:
        return ({"kprobes": hooks} if hooks else {}), []
    lsm, left = tg.as_lsm_hooks(hooks)
    return ({"lsmhooks": lsm} if lsm else {}), left


def _note_not_overridden(doc: PolicyDocument, calls: list[str]) -> None:
    annotations = doc.body["metadata"]["annotations"]
    annotations[f"{md.PREFIX}/not-overridden"] = (
        ", ".join(calls) + " (no BPF LSM equivalent; the main policy audits them)"
    )
    doc.body["metadata"]["annotations"] = dict(sorted(annotations.items()))


def _hooks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = body.get("spec", {})
    yield from spec.get("kprobes", [])
    yield from spec.get("lsmhooks", [])


def _is_enforcing(body: dict[str, Any]) -> bool:
    return any(
        a.get("action") in ENFORCING_ACTIONS
        for hook in _hooks(body)
        for sel in hook.get("selectors", [])
        for a in sel.get("matchActions", [])
    )


def _demote(body: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    for hook in _hooks(body):
        for sel in hook.get("selectors", []):
            sel["matchActions"] = [
                {"action": "Post"} if a.get("action") in ENFORCING_ACTIONS else a for a in sel["matchActions"]
            ]
    meta = body["metadata"]
    meta["labels"][f"{md.PREFIX}/action"] = "post"
    meta["annotations"][f"{md.PREFIX}/enforcement-refused"] = "; ".join(reasons)[:1000]
    meta["annotations"] = dict(sorted(meta["annotations"].items()))
    return body


class PolicyGenerator:
    """Turns normalized findings into checked policy documents."""

    def __init__(self, config: GenerationConfig, checker: Checker | None = None) -> None:
        self.config = config
        self.checker = checker
        self.generators = list(GENERATORS)

    def generate(self, events: Sequence[SecurityEvent], *, network: bool = True) -> GenerationResult:
        """``network=False`` leaves out the IOC blocklists (empty ``iocs``, no network documents):
        for callers that only want the family policies (the response service regenerates one
        family/namespace scope at a time, where IOC extraction was most of the cost)."""
        by_family: dict[str, list[SecurityEvent]] = defaultdict(list)
        unmapped_events: dict[str, list[SecurityEvent]] = defaultdict(list)
        # Findings repeat a handful of (category, techniques) pairs: route each pair once.
        routes: dict[tuple[str, tuple[str, ...]], FamilyGenerator | None] = {}
        for event in events:
            key = (event.category, event.techniques)
            if key not in routes:
                routes[key] = route(event, self.generators)
            gen = routes[key]
            if gen is None:
                unmapped_events[event.category].append(event)
            else:
                by_family[gen.name].append(event)

        refusals: list[Refusal] = []
        families: dict[str, FamilyResult] = {}
        for gen in self.generators:
            fam_events = by_family.get(gen.name)
            if not fam_events:
                continue
            result = FamilyResult(
                gen.name, gen.title, len(fam_events), Counter(e.category for e in fam_events)
            )
            for doc in self._family_documents(gen, fam_events):
                checked = self._check(doc, refusals)
                if checked is not None:
                    result.documents.append(checked)
            families[gen.name] = result

        unmapped = {
            cat: UnmappedGroup(cat, len(evs), _unmapped_reason(cat, (t for e in evs for t in e.techniques)))
            for cat, evs in sorted(unmapped_events.items())
        }
        iocs = extract_iocs(events, self.config) if network else IocSet()
        network_docs = self.network_documents(iocs, refusals) if network else []
        return GenerationResult(families, unmapped, iocs, network_docs, refusals)

    def network_documents(self, iocs: IocSet, refusals: list[Refusal]) -> list[PolicyDocument]:
        """The CDR IOC blocklists; callers that filter the IOCs afterwards (reputation) call it again."""
        docs = []
        cnp = cilium_blocklist(iocs, self.config)
        for doc in ([cnp] if cnp else []) + tracing_blocklist(iocs, self.config):
            checked = self._check(doc, refusals)
            if checked is not None:
                docs.append(checked)
        return docs

    def _family_documents(self, gen: FamilyGenerator, events: list[SecurityEvent]) -> list[PolicyDocument]:
        by_ns: dict[str | None, list[SecurityEvent]] = defaultdict(list)
        for event in events:
            by_ns[event.workload.namespace or None].append(event)
        override = self.config.action is EnforcementAction.OVERRIDE
        main_action = EnforcementAction.POST if override else self.config.action
        docs = []
        for namespace in sorted(by_ns, key=lambda n: (n is not None, n or "")):
            ns_events = sorted(by_ns[namespace], key=lambda e: e.id)
            kprobes = gen.build(ns_events, FamilyContext(self.config, main_action))
            docs.append(
                self._wrap(gen, namespace, ns_events, {"kprobes": kprobes}, main_action, override=False)
            )
            if override:
                hooks = _override_hooks(
                    gen.build(ns_events, FamilyContext(self.config, EnforcementAction.OVERRIDE))
                )
                spec, left = override_spec(hooks, self.config)
                if spec:
                    doc = self._wrap(
                        gen, namespace, ns_events, spec, EnforcementAction.OVERRIDE, override=True
                    )
                    if left:
                        _note_not_overridden(doc, left)
                    docs.append(doc)
        return docs

    def _wrap(
        self,
        gen: FamilyGenerator,
        namespace: str | None,
        events: list[SecurityEvent],
        spec: dict[str, Any],
        action: EnforcementAction,
        *,
        override: bool,
    ) -> PolicyDocument:
        scope = f"namespace {namespace}" if namespace else "the whole cluster (findings had no namespace)"
        description = f"qcdr: {gen.title} ({len(events)} Qualys CDR findings in {scope})"
        lbls = md.policy_labels(
            generator=GENERATOR,
            family=gen.name,
            severity=md.max_severity(events),
            action=action.value,
            technique=gen.techniques[0] if gen.techniques else None,
        )
        annos = md.policy_annotations(description=description, events=events, config=self.config)
        body = {
            "apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicyNamespaced" if namespace else "TracingPolicy",
            "metadata": md.object_meta(_policy_name(gen.name, namespace, override), namespace, lbls, annos),
            "spec": spec,
        }
        return PolicyDocument(
            family=gen.name,
            filename=_family_filename(gen.name, self.config),
            body=body,
            source_ids=[e.id for e in events],
            finding_count=len(events),
            targets=TargetVersions(tetragon=self.config.tetragon_version, cilium=self.config.cilium_version),
        )

    def check_documents(self, docs: list[PolicyDocument], refusals: list[Refusal]) -> list[PolicyDocument]:
        """Documents made elsewhere (the threat-intel blocklist) through the same checks."""
        return [d for d in (self._check(doc, refusals) for doc in docs) if d is not None]

    def _check(self, doc: PolicyDocument, refusals: list[Refusal]) -> PolicyDocument | None:
        if self.checker is None:
            return doc
        result = self.checker(doc.body)
        if result.errors:
            refusals.append(Refusal(doc.name, doc.family, "dropped", result.errors))
            return None
        if result.lint and _is_enforcing(doc.body):
            body = _demote(doc.body, result.lint)
            again = self.checker(body)
            if again.errors:
                refusals.append(Refusal(doc.name, doc.family, "dropped", again.errors))
                return None
            refusals.append(Refusal(doc.name, doc.family, "demoted-to-audit", result.lint))
            return doc.model_copy(update={"body": body})
        return doc
