"""Playbook files: loading, overriding, refusing bad files at start-up, matching findings, and
the targets they make of them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.consumer import Delivery
from qcdr_response.actions import planner
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow
from qcdr_response.actions.planner import target_of
from qcdr_response.actions.playbook import (
    BUILTIN_DIR,
    Match,
    PlaybookError,
    load_playbooks,
    matching,
    parse_duration,
)
from qcdr_response.actions.registry import load_actions
from qcdr_response.lifecycle.handlers import FindingsHandler
from qcdr_response.lifecycle.models import FindingRow
from qcdr_response.worker import make_lifecycle
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import finding_envelope, make_finding, response_settings

ONE = """
playbooks:
  - name: {name}
    match: {match}
    actions:
      - action: {action}
        lease: 15m
"""


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(exist_ok=True)
    path = d / name
    path.write_text(text)
    return path


def test_the_shipped_playbooks_load_and_use_known_actions() -> None:
    books = load_playbooks(None, known_actions=load_actions().names())
    names = {b.name for b in books}
    assert {"contain-cryptominer", "contain-reverse-shell", "contain-container-breakout"} <= names
    assert all(p.suffix == ".yaml" for p in BUILTIN_DIR.iterdir() if p.is_file())


def test_user_playbooks_replace_shipped_ones_and_can_turn_them_off(tmp_path: Path) -> None:
    write(
        tmp_path,
        "mine.yaml",
        """
playbooks:
  - name: contain-cryptominer
    enabled: false
    match: {}
    actions: [{action: block_binary}]
  - name: label-payments
    match: {namespaces: [payments]}
    actions: [{action: block_binary, lease: 2h}]
""",
    )
    books = {b.name: b for b in load_playbooks(tmp_path, known_actions=load_actions().names())}
    assert "contain-cryptominer" not in books
    assert books["label-payments"].actions[0].lease == 7200
    only_mine = load_playbooks(tmp_path, builtin=False)
    assert [b.name for b in only_mine] == ["label-payments"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("playbooks: [", "mine.yaml"),
        (ONE.format(name="Bad_Name", match="{}", action="block_binary"), "name"),
        (ONE.format(name="x", match="{colour: red}", action="block_binary"), "colour"),
        (ONE.format(name="x", match="{}", action="format_disk"), "unknown action 'format_disk'"),
        (ONE.format(name="x", match="{min_severity: urgent}", action="block_binary"), "min_severity"),
        ("playbooks:\n  - name: x\n    match: {}\n    actions: []\n", "actions"),
        (
            "playbooks:\n  - name: x\n    match: {}\n    actions: [{action: block_binary, lease: soon}]\n",
            "lease",
        ),
        # a number is checked like the text form: -60.0 (a float, so not checked) was a lease of -60 s
        (
            "playbooks:\n  - name: x\n    match: {}\n    actions: [{action: block_binary, lease: -60.0}]\n",
            "a duration must be positive",
        ),
        (
            "playbooks:\n  - name: x\n    match: {}\n    cooldown: -60.0\n"
            "    actions: [{action: block_binary}]\n",
            "a duration must be positive",
        ),
        (
            "playbooks:\n  - name: x\n    match: {}\n    actions: [{action: block_binary, lease: true}]\n",
            "not true or false",
        ),
        # step parameters are checked as a request's are: one past 64 bits was stored as given and
        # failed every findings batch the playbook matched (the action row could not be written)
        *(
            (
                f"playbooks:\n  - name: x\n    match: {{}}\n    actions:\n"
                f"      - {{action: {a}, params: {{{p}: {n}}}}}\n",
                f"playbook 'x' step 1: {a}: parameter {p}: ",
            )
            for a, p, n in (
                ("capture_forensics", "max_file_bytes", "99999999999999999999"),
                ("quarantine_file", "max_bytes", "99999999999999999999"),
                ("stop_container", "timeout", "-1"),
                ("block_binary", "colour", "red"),
            )
        ),
    ],
)
def test_bad_playbook_files_fail_at_start_up_with_the_file_and_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path, "mine.yaml", text)
    with pytest.raises(PlaybookError, match=r"mine\.yaml") as err:
        load_playbooks(tmp_path, builtin=False, known_actions=load_actions().names())
    assert message in str(err.value)


def test_a_playbook_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_bytes(b"playbooks:\n  - name: \xff\xfe\n")
    with pytest.raises(PlaybookError, match=r"mine\.yaml: not UTF-8 text \(byte 21\)$"):
        load_playbooks(tmp_path, builtin=False)


def test_a_name_twice_in_one_directory_is_refused(tmp_path: Path) -> None:
    text = ONE.format(name="dup", match="{}", action="block_binary")
    write(tmp_path, "a.yaml", text)
    write(tmp_path, "b.yaml", text)
    with pytest.raises(PlaybookError, match="defined twice"):
        load_playbooks(tmp_path, builtin=False)


def chain(pattern: str, **kw: object) -> Finding:
    return make_finding(
        kind="chain", category=f"chain.{pattern}", attributes={"pattern": pattern}, severity="critical", **kw
    )


def test_matching_rules() -> None:
    f = make_finding(techniques=["T1059.004"], severity="high", namespace="team-a")
    assert Match(techniques=("T1059",)).matches(f)  # a sub-technique matches its parent
    assert not Match(techniques=("T1071",)).matches(f)
    assert Match(min_severity="high").matches(f)
    assert not Match(min_severity="critical").matches(f)
    assert Match(namespaces=("team-*",)).matches(f)
    assert not Match(namespaces=("team-*",), exclude_namespaces=("team-a",)).matches(f)
    assert Match(categories=("Network_*",)).matches(f)
    assert not Match(categories=("Network",)).matches(f)
    assert Match(kinds=("source",), detectors=("falco",)).matches(f)
    assert not Match(chain_patterns=("cryptominer",)).matches(f)
    assert Match(chain_patterns=("cryptominer",)).matches(chain("cryptominer"))
    labelled = make_finding(attributes={"labels": {"app": "api", "tier": "web"}})
    assert Match(labels={"app": "api"}).matches(labelled)
    assert not Match(labels={"app": "db"}).matches(labelled)
    assert not Match(labels={"app": "api"}).matches(f)
    books = load_playbooks(None)
    assert [b.name for b in matching(books, chain("reverse_shell"))] == ["contain-reverse-shell"]
    # shipped playbooks never act on plain findings, however severe
    assert matching(books, make_finding(severity="critical")) == []


def test_shipped_playbooks_load_only_with_a_cluster_unless_asked(tmp_path: Path) -> None:
    from qcdr_response.settings import ResponseSettings

    assert ResponseSettings(_env_file=None).use_builtin_playbooks is False
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    assert ResponseSettings(_env_file=None, kubeconfig=kubeconfig).use_builtin_playbooks is True
    assert ResponseSettings(_env_file=None, builtin_playbooks=True).use_builtin_playbooks is True
    assert (
        ResponseSettings(_env_file=None, kubeconfig=kubeconfig, builtin_playbooks=False).use_builtin_playbooks
        is False
    )


def test_durations() -> None:
    assert [parse_duration(v) for v in ("90", "90s", "15m", "2h", "1d", 30)] == [90, 90, 900, 7200, 86400, 30]
    for bad in ("", "0s", "2 weeks", "-1h", "\u0661\u0662m", -60, 0):  # ASCII digits only
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_targets_from_findings_drop_what_is_malformed() -> None:
    f = make_finding(
        process={"name": "xmrig", "path": "/tmp/xmrig", "pid": 4242},
        workload={
            "namespace": "payments",
            "pod": "api-1",
            "container": "api",
            "container_id": "containerd://" + "ab" * 32,
            "owner_kind": "Deployment",
            "owner_name": "api",
        },
        attributes={"node": "node-1", "pod_uid": "not a uid"},
    )
    t = target_of(f)
    assert t.container_id == "ab" * 32
    assert t.pid == 4242
    assert t.binary == "/tmp/xmrig"
    assert t.node == "node-1"
    assert t.owner_name == "api"
    init = target_of(make_finding(process={"name": "init", "pid": 1}))
    assert init.pid is None  # never PID 1
    # only the malformed value is dropped (a Finding bounds neither names nor PIDs): the rest stays
    long_pod = target_of(make_finding(pod="p" * 254, process={"name": "x", "path": "/tmp/x", "pid": 2**40}))
    assert (long_pod.namespace, long_pod.pod, long_pod.pid, long_pod.binary) == (
        "payments",
        None,
        None,
        "/tmp/x",
    )
    assert target_of(make_finding(namespace="n" * 64)).namespace is None


ISOLATE = """
playbooks:
  - name: scan-isolate
    match: {categories: [Network_Scanning_Utility]}
    actions:
      - action: isolate_pod
        require_approval: true
"""


@pytest.mark.db
@pytest.mark.parametrize(
    ("overrides", "dropped"),
    [
        ({"pod": "p" * 254}, "pod: String should have at most 253 characters"),
        ({"namespace": "n" * 64}, "namespace: String should have at most 63 characters"),
    ],
    ids=["pod", "namespace"],
)
async def test_a_long_workload_name_is_stored_and_the_step_skipped_with_the_reason(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, overrides: dict[str, str], dropped: str
) -> None:
    """A pod name past 253 characters (or a namespace past 63) is a valid Finding but no valid
    action target: planning raised, the findings batch rolled back and the finding was retried
    until dead-lettered - never stored or sent on, because a playbook matched it. Now the name is
    left out, and the step that needs it is skipped saying so."""
    write(tmp_path, "pb.yaml", ISOLATE)
    books = tuple(load_playbooks(tmp_path, builtin=False, known_actions=load_actions().names()))
    ctx = ActionsContext(cluster_id="t", playbooks=books)

    async def plan(session: AsyncSession, findings: list[Finding]) -> int:
        return len(await planner.plan(session, ctx, findings, ctx.playbooks))

    finding = make_finding(event_time=datetime.now(UTC), **overrides)
    handler = FindingsHandler(sessions, make_lifecycle(response_settings()), hooks=[plan])
    await handler([Delivery("1-0", finding_envelope(finding), 1)])
    async with sessions() as session:
        assert await session.get(FindingRow, finding.id) is not None
        [row] = (await session.scalars(select(ActionRow).where(ActionRow.finding_id == finding.id))).all()
        assert row.state == "skipped"
        assert "isolate_pod needs target field(s)" in (row.message or "")
        assert f"left out of the finding's target: {dropped}" in (row.message or "")
