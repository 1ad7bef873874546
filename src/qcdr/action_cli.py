"""``qcdr action``: request, list, inspect, approve, reject, renew and undo response actions
through the response service's API (what a SOAR tool does, from a shell).

The token comes from ``QCDR_API_TOKEN`` (or ``--token-file``), never from a flag value that would
land in the shell history; it is never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from pydantic import SecretStr
from qcdr_common.logging import redact_url
from qcdr_common.secret_text import check_header_secret, describe_http_error
from rich.console import Console
from rich.markup import escape
from rich.table import Table

action_app = typer.Typer(
    name="action", help="Response actions through the response service's API.", no_args_is_help=True
)
# No markup: what is printed comes from the service and from the user's flags (a path such as
# /tmp/[/x] is a closing tag to Rich, which raised MarkupError or dropped the text).
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)


def _check_url(url: str) -> str:
    """``--url`` (or ``QCDR_RESPONSE_URL``), checked once before anything is sent: one that httpx
    cannot parse (``http://[::1``, ``http://response:abc``) raised ``httpx.InvalidURL``, no
    ``httpx.HTTPError``, as a traceback. A usage error (exit 2) in one line, user-info redacted."""
    try:
        parsed = httpx.URL(url)
        why = "" if parsed.scheme in ("http", "https") and parsed.host else "not an http(s) URL with a host"
    except httpx.InvalidURL as exc:
        why = str(exc)
    if why:
        shown = escape(redact_url(url))
        err.print(
            f"[red]error:[/red] --url / QCDR_RESPONSE_URL {shown}: {escape(why)}",
            markup=True,
            highlight=False,
        )
        raise typer.Exit(2)
    return url


Url = Annotated[
    str,
    typer.Option(
        "--url", envvar="QCDR_RESPONSE_URL", help="The response service's base URL.", callback=_check_url
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option("--token-file", help="Read the API token from this file (default: env QCDR_API_TOKEN)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
DEFAULT_URL = "http://127.0.0.1:8103"


class ApiCallError(Exception):
    pass


def _token(token_file: Path | None) -> SecretStr:
    if token_file is not None:
        try:
            value = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiCallError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:  # a ValueError, which _run does not catch: a traceback
            raise ApiCallError(f"the token file {token_file} is not UTF-8 text (byte {exc.start})") from None
    else:
        value = os.environ.get("QCDR_API_TOKEN", "").strip()
    if not value:
        raise ApiCallError("no API token: set QCDR_API_TOKEN or pass --token-file")
    try:
        check_header_secret(value)
    except ValueError as exc:
        raise ApiCallError(f"the API token {exc}") from None
    return SecretStr(value)


def _call(method: str, url: str, path: str, token_file: Path | None, **kwargs: Any) -> Any:
    token = _token(token_file)
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    try:
        with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as client:
            response = client.request(method, path, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        why = describe_http_error(exc)
        raise ApiCallError(f"cannot reach the response service at {redact_url(url)}: {why}") from None
    try:
        body = response.json()
    except ValueError:
        body = None  # not JSON: a proxy's error page, or --url names something else
    if response.status_code >= 400:
        problem = body if isinstance(body, dict) else {}
        # one line: an HTML error page would otherwise fill the terminal
        detail = problem.get("detail") or problem.get("title") or " ".join(response.text.split())[:200]
        reason = problem.get("reason")
        suffix = f" ({reason})" if reason else ""
        raise ApiCallError(f"HTTP {response.status_code}{suffix}: {detail}")
    if body is None:
        raise ApiCallError(
            f"{redact_url(url)} answered HTTP {response.status_code} but not with JSON: "
            "is it the response service?"
        )
    return body


def _run(fn: Any) -> Any:
    try:
        return fn()
    except ApiCallError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _print_action(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(orjson.dumps(doc).decode())
        return
    lease = f", lease until {doc['lease_expires_at']}" if doc.get("lease_expires_at") else ""
    mode = " (dry run)" if doc.get("dry_run") else ""
    out.print(f"action {doc['id']}: {doc['action']} {doc['state']}{mode}{lease}", highlight=False)
    if doc.get("message"):
        out.print(f"  {doc['message']}", highlight=False)
    for entry in doc.get("audit", []):
        out.print(f"  {entry['at']}  {entry['actor']:<24} {entry['event']}", highlight=False)


def _params(values: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use key=value (the value may be JSON)", param_hint="--param")
        try:
            params[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[key] = raw
    return params


@action_app.command("list")
def list_actions(
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    state: Annotated[str | None, typer.Option(help="Only this state (pending, succeeded, ...).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    finding: Annotated[str | None, typer.Option(help="Only actions for this finding id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Json = False,
) -> None:
    """List actions, newest first."""
    params = {
        k: v
        for k, v in {"state": state, "action": action, "finding_id": finding, "limit": limit}.items()
        if v
    }
    page = _run(lambda: _call("GET", url, "/v1/actions", token_file, params=params))
    if as_json:
        out.print_json(orjson.dumps(page).decode())
        return
    table = Table("id", "action", "state", "target", "finding", "lease until", box=None)
    for a in page["items"]:
        target = " ".join(f"{k}={v}" for k, v in a["target"].items())
        state_text = a["state"] + (" (dry run)" if a["dry_run"] else "")
        table.add_row(
            str(a["id"]), a["action"], state_text, target, a["finding_id"] or "", a["lease_expires_at"] or ""
        )
    out.print(table)


@action_app.command("show")
def show(action_id: int, url: Url = DEFAULT_URL, token_file: TokenFile = None, as_json: Json = False) -> None:
    """One action with its audit trail."""
    _print_action(_run(lambda: _call("GET", url, f"/v1/actions/{action_id}", token_file)), as_json)


@action_app.command("run")
def run_action(
    action: Annotated[str, typer.Argument(help="The action (see `qcdr action catalog`).")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    namespace: Annotated[str | None, typer.Option()] = None,
    pod: Annotated[str | None, typer.Option()] = None,
    node: Annotated[str | None, typer.Option()] = None,
    pod_uid: Annotated[str | None, typer.Option()] = None,
    container: Annotated[str | None, typer.Option(help="The container's name in the pod.")] = None,
    container_id: Annotated[str | None, typer.Option()] = None,
    pid: Annotated[int | None, typer.Option(help="Host PID (Tetragon's process.pid).")] = None,
    pid_start_ticks: Annotated[
        int | None, typer.Option(help="The PID's start in clock ticks since boot (/proc/PID/stat field 22).")
    ] = None,
    pid_start_time: Annotated[
        str | None, typer.Option(help="The PID's start time, ISO 8601 (Tetragon's process.start_time).")
    ] = None,
    path: Annotated[str | None, typer.Option(help="A file inside the container.")] = None,
    binary: Annotated[str | None, typer.Option()] = None,
    owner_kind: Annotated[str | None, typer.Option()] = None,
    owner_name: Annotated[str | None, typer.Option()] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="key=value (repeatable; JSON values allowed).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only check, change nothing.")] = False,
    require_approval: Annotated[bool, typer.Option("--require-approval")] = False,
    lease: Annotated[str | None, typer.Option(help="Containment lease, e.g. 30m, 2h.")] = None,
    reason: Annotated[str, typer.Option(help="Why (goes to the audit trail).")] = "",
    as_json: Json = False,
) -> None:
    """Request one action."""
    target = {
        "namespace": namespace,
        "pod": pod,
        "node": node,
        "pod_uid": pod_uid,
        "container": container,
        "container_id": container_id,
        "pid": pid,
        "pid_start_ticks": pid_start_ticks,
        "pid_start_time": pid_start_time,
        "path": path,
        "binary": binary,
        "owner_kind": owner_kind,
        "owner_name": owner_name,
    }
    body: dict[str, Any] = {
        "action": action,
        "target": {k: v for k, v in target.items() if v is not None},
        "parameters": _params(param or []),
        "dry_run": dry_run,
        "require_approval": require_approval,
        "reason": reason,
    }
    if lease is not None:
        body["lease"] = lease
    _print_action(_run(lambda: _call("POST", url, "/v1/actions", token_file, json=body)), as_json)


def _decision(
    verb: str, action_id: int, url: str, token_file: Path | None, body: dict[str, Any], as_json: bool
) -> None:
    doc = _run(lambda: _call("POST", url, f"/v1/actions/{action_id}/{verb}", token_file, json=body))
    _print_action(doc, as_json)


def _note_command(verb: str, help_text: str) -> None:
    """approve, reject and undo: the same call with a note, one verb each."""

    def command(
        action_id: int,
        url: Url = DEFAULT_URL,
        token_file: TokenFile = None,
        note: str = "",
        as_json: Json = False,
    ) -> None:
        _decision(verb, action_id, url, token_file, {"note": note}, as_json)

    command.__doc__ = help_text
    action_app.command(verb)(command)


for _verb, _help in (
    ("approve", "Approve a pending action (it is then executed)."),
    ("reject", "Reject a pending action (the rest of its playbook run is cancelled)."),
    ("undo", "Reverse a succeeded action (containment is released)."),
):
    _note_command(_verb, _help)


@action_app.command("renew")
def renew(
    action_id: int,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    lease: Annotated[str | None, typer.Option(help="New lease from now, e.g. 2h.")] = None,
    as_json: Json = False,
) -> None:
    """Extend a containment lease."""
    _decision("renew", action_id, url, token_file, {"lease": lease}, as_json)


@action_app.command("catalog")
def catalog(url: Url = DEFAULT_URL, token_file: TokenFile = None, as_json: Json = False) -> None:
    """The actions the service can run, what they need and the permissions they use."""
    entries = _run(lambda: _call("GET", url, "/v1/actions/catalog", token_file))
    if as_json:
        out.print_json(orjson.dumps(entries).decode())
        return
    table = Table("action", "scope", "needs", "containment", "undo", "permissions", box=None)
    for e in entries:
        table.add_row(
            e["name"],
            e["scope"],
            ", ".join(e["requires"]),
            "lease" if e["containment"] else "",
            "yes" if e["reversible"] else "",
            ", ".join(e["permissions"]),
        )
    out.print(table)
