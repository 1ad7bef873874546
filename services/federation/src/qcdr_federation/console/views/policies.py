"""Policies (the response service's generated policies): the list, one policy with its current
version's YAML highlighted, a unified diff between two versions, and approve / apply / revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from qcdr_federation.console.backends import Result
from qcdr_federation.console.highlight import diff_html, unified_diff, yaml_html
from qcdr_federation.console.web import (
    PREFIX,
    ConsoleRefusedError,
    ConsoleState,
    FormDep,
    SessionDep,
    StateDep,
    render,
    require_write,
    via,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 100
MAX_CURSOR_CHARS = 512
STATUSES = ("proposed", "approved", "applied", "revoked")
VERBS = ("approve", "apply", "revoke")
# the response API takes notes of up to 500 characters; "via console by <name>: " comes first
MAX_REASON = 400


def _int(value: str, what: str) -> int | None:
    if not value:
        return None
    # ASCII digits only: str.isdigit() is also true for "²", which int() refuses
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise ConsoleRefusedError(400, f"{what} must be a number")
    return int(value)


@router.get("/policies")
async def policies(request: Request, session: SessionDep, state: StateDep) -> Response:
    cursor = request.query_params.get("cursor", "")
    status = request.query_params.get("status", "")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ConsoleRefusedError(400, "the cursor is too long")
    if status and status not in STATUSES:
        raise ConsoleRefusedError(400, "unknown status")
    params = {
        "limit": str(PAGE_SIZE),
        **({"cursor": cursor} if cursor else {}),
        **({"status": status} if status else {}),
    }
    result = await state.backends.get("response", "/v1/policies", params)
    data: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    next_cursor = data.get("next_cursor")
    return render(
        request,
        "policies.html",
        session,
        active="policies",
        errors=[] if result.ok else [result],
        items=data.get("items") or [],
        status_filter=status,
        statuses=STATUSES,
        next_params={"cursor": next_cursor, **({"status": status} if status else {})}
        if next_cursor
        else None,
        paged=bool(cursor),
    )


async def _version(state: ConsoleState, policy_id: int, number: int) -> Result:
    return await state.backends.get("response", f"/v1/policies/{policy_id}/versions/{number}")


@router.get("/policies/{policy_id}")
async def policy(policy_id: int, request: Request, session: SessionDep, state: StateDep) -> Response:
    result = await state.backends.get("response", f"/v1/policies/{policy_id}")
    if result.status == 404:
        raise ConsoleRefusedError(404, f"no policy {policy_id}")
    errors: list[Result] = [] if result.ok else [result]
    item: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    yaml_block = None
    diff_block = None
    numbers = [
        int(v["version"]) for v in item.get("versions") or [] if isinstance(v, dict) and "version" in v
    ]
    shown = _int(request.query_params.get("version", ""), "version") or item.get("current_version")
    old_n = _int(request.query_params.get("from", ""), "from")
    new_n = _int(request.query_params.get("to", ""), "to")
    if item and shown:
        current = await _version(state, policy_id, int(shown))
        if current.ok and isinstance(current.data, dict):
            yaml_block = yaml_html(str(current.data.get("yaml", "")))
        elif current.status != 404:
            errors.append(current)
    if item and old_n is not None and new_n is not None:
        old, new = await _version(state, policy_id, old_n), await _version(state, policy_id, new_n)
        for side in (old, new):
            if not side.ok and side.status != 404:
                errors.append(side)
        if old.ok and new.ok and isinstance(old.data, dict) and isinstance(new.data, dict):
            text = unified_diff(
                str(old.data.get("yaml", "")),
                str(new.data.get("yaml", "")),
                f"version {old_n}",
                f"version {new_n}",
            )
            diff_block = diff_html(text) if text else None
            diff_empty = not text
        else:
            raise ConsoleRefusedError(404, "no such version to compare")
    else:
        diff_empty = False
    return render(
        request,
        "policy.html",
        session,
        active="policies",
        errors=errors,
        item=item,
        shown=shown,
        numbers=numbers,
        yaml_block=yaml_block,
        diff_block=diff_block,
        diff_empty=diff_empty,
        old_n=old_n,
        new_n=new_n,
        done=request.query_params.get("done", "") if request.query_params.get("done") in VERBS else None,
    )


@router.post("/policies/{policy_id}/{verb}")
async def transition(
    policy_id: int, verb: str, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    require_write(session)
    if verb not in VERBS:
        raise ConsoleRefusedError(404, "no such policy action")
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise ConsoleRefusedError(400, f"the reason is longer than {MAX_REASON} characters")
    result = await state.backends.post(
        "response", f"/v1/policies/{policy_id}/{verb}", {"note": via(session, reason)}
    )
    if not result.ok:
        raise ConsoleRefusedError(
            502 if result.status is None or result.status >= 500 else 409, result.message
        )
    return RedirectResponse(f"{PREFIX}/policies/{policy_id}?done={verb}", status_code=303)
