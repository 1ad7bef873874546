"""Sign in (an API token exchanged for a session cookie) and sign out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from qcdr_common.api.auth import TokenStore, unauthorized
from qcdr_common.api.errors import ApiError
from starlette.datastructures import Headers

from qcdr_federation.console import csrf
from qcdr_federation.console.session import COOKIE_NAME, COOKIE_PATH
from qcdr_federation.console.web import (
    PREFIX,
    ConsoleRefusedError,
    FormDep,
    StateDep,
    log,
    read_form,
    render,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return render(request, "login.html", None)


@router.post("/login")
async def login(request: Request, state: StateDep) -> Response:
    # no session yet, so no CSRF token: the origin check keeps other sites from signing a
    # browser in to an account of theirs
    if not csrf.origin_ok(request):
        raise ConsoleRefusedError(403, "the request came from another origin")
    form = await read_form(request)
    token = form.get("token", "").strip()
    store: TokenStore = request.app.state.api_tokens
    client = request.client.host if request.client else None
    try:
        if not token.isascii():
            # a token is ASCII; a header value is Latin-1 only, so "€" would end in a 500
            raise unauthorized("malformed_token", "the token is not a valid token")
        principal = store.authenticate(Headers({"authorization": f"Bearer {token}"}))
    except ApiError as exc:
        # the token is never logged, only why it was refused
        log.info("console_sign_in_refused", reason=exc.reason, client=client)
        return render(request, "login.html", None, status=401, error="That token is not valid.")
    # a fresh id on every sign-in (no fixation); a session the browser still had ends here
    await state.sessions.delete(request.cookies.get(COOKIE_NAME))
    session_id, _session = await state.sessions.create(principal)
    log.info("console_signed_in", principal=principal.name, client=client)
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=int(state.sessions.max_s),
        path=COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request, state: StateDep, _form: FormDep) -> Response:
    await state.sessions.delete(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response
