"""``qcdr``: the umbrella command line. ``qcdr run --once`` is the original tool's CronJob mode."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from qcdr_common.logging import configure_logging
from rich.console import Console

from qcdr.defaults import DEFAULT_STATE_DIR
from qcdr.durations import parse_duration

app = typer.Typer(
    name="qcdr",
    help="qcdr: Qualys CDR findings in, valid and safe Tetragon and Cilium policies out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# No markup on any qcdr console: what is printed comes from findings, feeds, flags and files, and
# a "[/x]" in one is a closing tag to Rich (MarkupError, or the text dropped).
err = Console(stderr=True, soft_wrap=True, markup=False)

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad flags or missing configuration: exit code 2."""


@app.callback()
def _root(
    log_level: Annotated[
        str, typer.Option(envvar="QCDR_LOG_LEVEL", help="Log level of the diagnostics written to stderr.")
    ] = "WARNING",
) -> None:
    """qcdr commands."""
    # Diagnostics go to stderr so that stdout stays the report (and valid JSON with --json).
    try:
        configure_logging(log_level, "console")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level / QCDR_LOG_LEVEL") from None


def _register_subcommands() -> None:
    from qcdr.action_cli import action_app
    from qcdr.admission_cli import admission_app
    from qcdr.intel_cli import intel_app
    from qcdr.outputs_cli import outputs_app

    app.add_typer(intel_app)
    app.add_typer(action_app)
    app.add_typer(outputs_app)
    app.add_typer(admission_app)


_register_subcommands()


@app.command()
def run(
    platform: Annotated[
        str | None,
        typer.Option(
            envvar="QUALYS_PLATFORM",
            help="Qualys platform: US1…US4, EU1…EU3, CA1, IN1, AE1, UK1, "
            "AU1, KSA1 (aliases such as 'eu' or 'canada' work). "
            "Default US2.",
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            envvar="QUALYS_GATEWAY_URL",
            help="Gateway host or full URL (overrides --platform), e.g. "
            "gateway.qg2.apps.qualys.com or http://127.0.0.1:8080.",
        ),
    ] = None,
    hours: Annotated[
        float, typer.Option(min=0.01, max=24 * 90, help="Lookback period for CDR findings.")
    ] = 24.0,
    action: Annotated[
        str,
        typer.Option(
            help="Policy action: Post (audit), Sigkill (kill the process) or "
            "Override (refuse the call; written as separate policies)."
        ),
    ] = "Post",
    output: Annotated[Path, typer.Option(help="Output directory for the generated YAML files.")] = Path(
        "./policies"
    ),
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Server-side apply to the cluster (KUBECONFIG or "
            "in-cluster) and prune objects qcdr no longer "
            "generates.",
        ),
    ] = False,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Run once and exit (CronJob mode). Without it qcdr runs as a controller loop."
        ),
    ] = False,
    interval: Annotated[str, typer.Option(help="Controller-loop interval (30s, 5m, 1h, 1h30m).")] = "1h",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Controller loop: serve Prometheus metrics on this port (/metrics): cycles, last "
            "success, duration, findings, policies, IOCs. Not with --once.",
        ),
    ] = None,
    events_file: Annotated[
        Path | None, typer.Option(help="Read findings from a JSON/JSONL file instead of the Qualys API.")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the watermark and the window's findings here "
            "(default ./.qcdr-state in controller mode; none "
            "with --once)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Generate and check, but write and apply nothing (with --apply: server-side dry run).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON report.")] = False,
    cluster: Annotated[
        str | None, typer.Option(envvar="QCDR_CLUSTER_ID", help="Cluster name to attach to findings.")
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="kubeconfig for --apply (default: $KUBECONFIG, in-cluster, ~/.kube/config)."),
    ] = None,
    severity: Annotated[
        str | None, typer.Option(help="Only findings of this severity (LOW…CRITICAL).")
    ] = None,
    resource_type: Annotated[
        str | None, typer.Option(help="Qualys resourceType filter, e.g. container.")
    ] = None,
    tetragon_version: Annotated[str, typer.Option(help="Target Tetragon version (1.4–1.7).")] = "1.5",
    override_hooks: Annotated[
        str,
        typer.Option(
            help="With --action Override: refuse through error-injectable kprobes ('kprobes', needs "
            "CONFIG_BPF_KPROBE_OVERRIDE) or BPF LSM hooks ('lsm', Tetragon 1.2+, kernel 5.7+ with lsm=bpf)."
        ),
    ] = "kprobes",
    kernel: Annotated[
        str, typer.Option(help="Oldest node kernel the policies must load on (≥ 5.10).")
    ] = "5.10",
    cilium_version: Annotated[str, typer.Option(help="Target Cilium version (≥ 1.16).")] = "1.17",
    never_block: Annotated[
        list[str] | None,
        typer.Option(help="CIDR never to block (repeatable): pod and service CIDRs, DNS, the API server."),
    ] = None,
    suspicious_port: Annotated[
        list[int] | None,
        typer.Option(
            help="Replace the suspicious-port set (repeatable); default 1337 3333 4444 5555 6666 6667 "
            "9001 9050 12345 14433 14444 27374 31337; 53, 80, 443, 6443, 8080 and 8443 are refused."
        ),
    ] = None,
    threat_intel: Annotated[
        bool,
        typer.Option("--threat-intel", help="Aggregate threat-intel feeds into threat-intel-blocklist.yaml."),
    ] = False,
    feeds: Annotated[
        Path | None,
        typer.Option(
            help="Feeds YAML (a list of name, url, category, format, min_interval, enabled, "
            "may_be_empty; format: auto, ip, cidr, first-column, spamhaus, dshield, dataplane, domains "
            "or hosts); default: feodo-c2, tor-exit, emerging-threats, blocklist-de, cinsscore, "
            "spamhaus-drop."
        ),
    ] = None,
    reputation_threshold: Annotated[
        int,
        typer.Option(
            min=1,
            max=100,
            help="With ABUSEIPDB_API_KEY: IOC IPs scoring below this are not "
            "blocked (unless a threat feed lists them).",
        ),
    ] = 50,
    intel_format: Annotated[
        str, typer.Option(help="groups (CiliumCIDRGroups behind one policy) or inline (CIDRs in the policy).")
    ] = "groups",
    intel_max_cidrs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Size limit of the threat-intel blocklist; the highest-confidence "
            "indicators win. Default: no limit.",
        ),
    ] = None,
    intel_group_size: Annotated[
        int, typer.Option(min=1, max=50_000, help="CIDRs per CiliumCIDRGroup.")
    ] = 5000,
    intel_ttl: Annotated[
        str, typer.Option(help="How long an indicator stays blocked after it left every feed.")
    ] = "7d",
    dns_resolve_deny: Annotated[
        bool,
        typer.Option(
            "--dns-resolve-deny",
            help="Resolve the IOC domains of the findings and, with --threat-intel, the names on the "
            "domain feeds (--feeds, format domains or hosts), and deny their addresses for their "
            "TTL: dns-resolve-deny.yaml.",
        ),
    ] = False,
    dns_resolver: Annotated[
        list[str] | None,
        typer.Option(
            help="DNS server to resolve with, IP or IP:PORT (repeatable); default: /etc/resolv.conf "
            "(in a pod, the cluster DNS, whose answers the pods get)."
        ),
    ] = None,
    dns_max_names: Annotated[
        int, typer.Option(min=1, help="Names resolved per run; the ones the fewest feeds list go first.")
    ] = 5000,
    dns_tetragon: Annotated[
        bool,
        typer.Option(
            "--dns-tetragon", help="Also a Tetragon tcp_connect policy (Post) on the denied addresses."
        ),
    ] = False,
) -> None:
    """Fetch Qualys CDR findings and turn them into Tetragon and Cilium policies."""
    try:
        options = _run_options(
            hours=hours,
            action=action,
            output=output,
            state_dir=state_dir,
            dry_run=dry_run,
            cluster=cluster,
            once=once,
            tetragon_version=tetragon_version,
            kernel=kernel,
            cilium_version=cilium_version,
            never_block=never_block,
            suspicious_port=suspicious_port,
            override_hooks=override_hooks,
        )
        every = _flag_duration("--interval", interval)
        options.reputation_threshold = reputation_threshold
        if threat_intel:
            options.intel = _intel_options(
                options, feeds, intel_format, intel_max_cidrs, intel_group_size, intel_ttl
            )
        elif feeds is not None:
            raise UsageError("--feeds needs --threat-intel")
        else:  # unused without --threat-intel, but a typo is still a typo
            _intel_format(intel_format)
            _flag_duration("--intel-ttl", intel_ttl)
        if metrics_port is not None and once:
            raise UsageError("--metrics-port is for the controller loop, not --once")
        if dns_resolve_deny:
            options.dns = _dns_options(options, dns_resolver or [], dns_max_names, dns_tetragon)
        elif dns_resolver or dns_tetragon:
            raise UsageError("--dns-resolver and --dns-tetragon need --dns-resolve-deny")
        source = _make_source(events_file, platform, gateway, severity, resource_type)
    except (UsageError, ValueError, ValidationError) as exc:
        _fail(_one_line(exc), EXIT_USAGE)
    applier = _make_applier(kubeconfig, dry_run) if apply else None
    if metrics_port is not None:
        from qcdr import metrics

        try:
            metrics.serve(metrics_port)
        except OSError as exc:
            _fail(f"--metrics-port {metrics_port}: {exc.strerror or exc}", EXIT_USAGE)
    code = asyncio.run(_main(options, source, once=once, every=every, json_out=json_out, applier=applier))
    raise typer.Exit(code)


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Output directory.")] = Path("./policies"),
    action: Annotated[str, typer.Option(help="Post, Sigkill or Override.")] = "Post",
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    findings: Annotated[
        Path | None,
        typer.Option(
            help="Findings file served by the local API double (default: the bundled examples/findings.json)."
        ),
    ] = None,
    threat_intel: Annotated[
        bool, typer.Option(help="Also run the bundled feeds and the AbuseIPDB double (--threat-intel).")
    ] = True,
) -> None:
    """Run once against a local Qualys CDR API double serving the bundled demo findings."""
    from qcdr.demo import run_demo

    try:
        options = _run_options(
            hours=24.0,
            action=action,
            output=output,
            state_dir=None,
            dry_run=False,
            cluster="demo",
            once=True,
            tetragon_version="1.5",
            kernel="5.10",
            cilium_version="1.17",
            never_block=None,
            suspicious_port=None,
        )
        if findings is not None:
            _check_demo_findings(findings)
    except (UsageError, ValueError, ValidationError) as exc:
        _fail(_one_line(exc), EXIT_USAGE)
    code = run_demo(
        options,
        findings=findings,
        json_out=json_out,
        main=lambda opts, source: _main(
            opts, source, once=True, every=timedelta(hours=1), json_out=json_out, applier=None
        ),
        threat_intel=threat_intel,
    )
    raise typer.Exit(code)


def _check_demo_findings(findings: Path) -> None:
    """Read --findings now: the API double reads it once serving, where a missing file or bad JSON
    was a traceback."""
    from qcdr_ingest.qualys.double_store import load_findings

    if not findings.is_file():
        raise UsageError(f"--findings {findings}: no such file")
    try:
        load_findings(findings)
    except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise UsageError(
            f"--findings {findings}: not a JSON array or JSON lines of findings ({exc})"
        ) from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _flag_duration(flag: str, text: str) -> timedelta:
    """The duration a flag gives, its error naming the flag (two flags take durations)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"qcdr: error: {message}", highlight=False)
    raise typer.Exit(code)


def _run_options(
    *,
    hours: float,
    action: str,
    output: Path,
    state_dir: Path | None,
    dry_run: bool,
    cluster: str | None,
    once: bool,
    tetragon_version: str,
    kernel: str,
    cilium_version: str,
    never_block: list[str] | None,
    suspicious_port: list[int] | None,
    override_hooks: str = "kprobes",
) -> Any:
    from qcdr_response.policies.config import EnforcementAction, GenerationConfig, OverrideHooks
    from qcdr_response.policies.targets import CiliumTarget, TetragonTarget

    from qcdr.pipeline import RunOptions

    by_lower = {a.value.lower(): a for a in EnforcementAction}
    if action.lower() not in by_lower:
        raise UsageError(f"--action must be one of Post, Sigkill, Override (got {action!r})")
    TetragonTarget(version=tetragon_version, kernel=kernel)
    CiliumTarget(version=cilium_version)
    hooks = {h.value: h for h in OverrideHooks}
    if override_hooks.lower() not in hooks:
        raise UsageError(f"--override-hooks must be kprobes or lsm (got {override_hooks!r})")
    fields: dict[str, Any] = {
        "override_hooks": hooks[override_hooks.lower()],
        "action": by_lower[action.lower()],
        "tetragon_version": tetragon_version,
        "kernel_version": kernel,
        "cilium_version": cilium_version,
        "never_block": tuple(never_block or ()),
    }
    if suspicious_port:
        fields["suspicious_ports"] = frozenset(suspicious_port)
    generation = GenerationConfig(**fields)
    if state_dir is None and not once:
        state_dir = DEFAULT_STATE_DIR
    # checked here, not when the run creates them: mkdir's "[Errno 17] File exists" named no flag
    for flag, directory in (("--output", output), ("--state-dir", state_dir)):
        if directory is not None and directory.exists() and not directory.is_dir():
            raise UsageError(f"{flag} {directory} is a file, not a directory")
    return RunOptions(
        hours=hours,
        output=output,
        state_dir=state_dir,
        dry_run=dry_run,
        cluster=cluster,
        generation=generation,
    )


def _intel_format(fmt: str) -> Any:
    from qcdr_response.policies.threat_intel import IntelFormat

    try:
        return IntelFormat(fmt.lower())
    except ValueError:
        raise UsageError(f"--intel-format must be groups or inline (got {fmt!r})") from None


def _intel_options(
    options: Any, feeds: Path | None, fmt: str, max_cidrs: int | None, group_size: int, ttl: str
) -> Any:

    from qcdr.intel_step import IntelError, IntelOptions, feed_specs

    intel_format = _intel_format(fmt)
    if feeds is not None and not feeds.is_file():
        raise UsageError(f"--feeds {feeds}: no such file")
    intel = IntelOptions(
        state_dir=options.intel_state_dir,
        feeds_file=feeds,
        max_cidrs=max_cidrs,
        group_size=group_size,
        format=intel_format,
        ttl=_flag_duration("--intel-ttl", ttl),
        never_block=options.generation.never_block,
        cilium_version=options.generation.cilium_version,
        tetragon_version=options.generation.tetragon_version,
    )
    try:
        feed_specs(intel)  # a broken feeds file is a usage error now, before anything is fetched
    except IntelError as exc:
        raise UsageError(str(exc)) from exc
    return intel


def _dns_options(options: Any, resolvers: list[str], max_names: int, tetragon: bool) -> Any:
    from qcdr_response.dns.resolve_deny import parse_resolvers, system_nameservers

    from qcdr.dns_step import DnsBlockOptions

    try:
        addresses, port = parse_resolvers(resolvers)
    except ValueError as exc:
        raise UsageError(f"--dns-resolver {exc}") from None
    if not addresses and not system_nameservers():
        raise UsageError("--dns-resolve-deny: no resolver in /etc/resolv.conf; give --dns-resolver")
    return DnsBlockOptions(
        state_dir=options.intel_state_dir,
        nameservers=tuple(addresses),
        port=port,
        max_names=max_names,
        tetragon=tetragon,
        never_block=options.generation.never_block,
        cilium_version=options.generation.cilium_version,
        tetragon_version=options.generation.tetragon_version,
    )


def _make_source(
    events_file: Path | None,
    platform: str | None,
    gateway: str | None,
    severity: str | None,
    resource_type: str | None,
) -> Any:
    from qcdr_ingest.qualys.client import severity_param
    from qcdr_ingest.qualys.platforms import get_platform, parse_gateway

    from qcdr.sources import FileSource

    # a typo is a usage error now, not a failure after logging in, nor silence with --events-file
    if platform is not None:
        get_platform(platform)
    if gateway is not None:
        parse_gateway(gateway)
    if severity is not None:
        severity_param(severity)
    if events_file is not None:
        if not events_file.is_file():
            raise UsageError(f"--events-file {events_file}: no such file")
        return FileSource(events_file)
    from qcdr.qualys_source import QualysSource

    return QualysSource.from_environment(
        platform=platform, gateway=gateway, severity=severity, resource_type=resource_type
    )


def _make_applier(kubeconfig: Path | None, dry_run: bool) -> Any:
    from qcdr.apply_step import ClusterApplier

    return ClusterApplier(kubeconfig=kubeconfig, dry_run=dry_run)


async def _main(
    options: Any, source: Any, *, once: bool, every: timedelta, json_out: bool, applier: Any
) -> int:
    from qcdr.loop import run_loop

    return await run_loop(
        options,
        source,
        once=once,
        every=every,
        json_out=json_out,
        applier=applier,
        console=Console(soft_wrap=True, markup=False),
        err=err,
    )


def main() -> None:
    # Typer's own usage errors exit 2 already; make a broken pipe (qcdr run --json | head) quiet.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


if __name__ == "__main__":
    main()
