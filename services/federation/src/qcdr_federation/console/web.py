"""What every console page shares: the templates, the session and CSRF dependencies, the error
pages and the security headers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_common.logging import get_logger
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qcdr_federation.console import csrf
from qcdr_federation.console.backends import Backends
from qcdr_federation.console.session import COOKIE_NAME, ConsoleSession, SessionStore
from qcdr_federation.settings import FederationSettings

log = get_logger("qcdr.federation.console")

PREFIX = "/ui"
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (
    ("overview", "Overview", f"{PREFIX}/"),
    ("clusters", "Clusters", f"{PREFIX}/clusters"),
    ("chains", "Attack chains", f"{PREFIX}/chains"),
    ("findings", "Findings", f"{PREFIX}/findings"),
    ("policies", "Policies", f"{PREFIX}/policies"),
    ("actions", "Actions", f"{PREFIX}/actions"),
    ("admission", "Admission", f"{PREFIX}/admission"),
)

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class ConsoleState:
    settings: FederationSettings
    sessions: SessionStore
    backends: Backends

    @property
    def role(self) -> FederationRole:
        return self.settings.role


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


class ConsoleRefusedError(Exception):
    """Ends a console request with an error page (or the sign-in redirect)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequiredError(ConsoleRefusedError):
    def __init__(self) -> None:
        super().__init__(401, "sign in first")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer under ``/ui`` (pages, redirects, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(f"{PREFIX}/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def current_session(request: Request) -> ConsoleSession:
    session = await console_state(request).sessions.load(request.cookies.get(COOKIE_NAME))
    if session is None:
        raise SignInRequiredError()
    return session


SessionDep = Annotated[ConsoleSession, Depends(current_session)]
StateDep = Annotated[ConsoleState, Depends(console_state)]


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (the last value of a repeated field); 413 past 64 KiB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConsoleRefusedError(413, "the form is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleRefusedError(400, "the form could not be read") from None
    return dict(pairs)


async def checked_form(request: Request, session: SessionDep) -> dict[str, str]:
    """A POST's form once its CSRF token and origin check out (403 otherwise)."""
    if not csrf.origin_ok(request):
        log.warning("console_csrf_refused", why="origin", principal=session.principal, path=request.url.path)
        raise ConsoleRefusedError(403, "the request came from another origin")
    form = await read_form(request)
    if not csrf.token_ok(session, form.get("csrf_token")):
        log.warning("console_csrf_refused", why="token", principal=session.principal, path=request.url.path)
        raise ConsoleRefusedError(403, "the form's CSRF token is missing or wrong; reload the page")
    return form


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def require_write(session: ConsoleSession) -> None:
    if not session.can_write:
        raise ConsoleRefusedError(403, f"{session.principal} has no write scope")


def via(session: ConsoleSession, reason: str = "") -> str:
    """The note a write made through the console carries."""
    note = f"via console by {session.principal}"
    return f"{note}: {reason.strip()}" if reason.strip() else note


def render(
    request: Request,
    template: str,
    session: ConsoleSession | None,
    *,
    status: int = 200,
    active: str = "",
    **context: Any,
) -> HTMLResponse:
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    html = templates.get_template(template).render(
        session=session,
        nav=NAV,
        active=active,
        prefix=PREFIX,
        role=state.role.value if state else "",
        cluster_name=state.settings.spoke_name if state else "",
        **context,
    )
    return HTMLResponse(html, status_code=status)


async def refused_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusedError)
    if isinstance(exc, SignInRequiredError) and request.method in ("GET", "HEAD"):
        return RedirectResponse(f"{PREFIX}/login", status_code=303)
    session = None
    if not isinstance(exc, SignInRequiredError):
        session = await console_state(request).sessions.load(request.cookies.get(COOKIE_NAME))
    return render(request, "error.html", session, status=exc.status, message=exc.message)
