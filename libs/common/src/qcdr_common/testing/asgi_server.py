"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread (API doubles, test servers).

One helper for every local double, so each gets the same details right: a free port bound before
start-up (no race), ``TCP_NODELAY`` on the listening socket, no websockets stack (its deprecation
warnings break ``filterwarnings = error`` runs), a bounded start-up wait and a clean shutdown.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import uvicorn


@contextmanager
def serve_app(
    app: Callable[..., Any],
    *,
    name: str = "asgi-test-server",
    startup_timeout_s: float = 10.0,
    lifespan: Literal["on", "off", "auto"] = "off",
    fast: bool = False,
    tls: tuple[Path, Path] | None = None,
    graceful_shutdown_s: int = 2,
) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) until the block ends; yields ``http://127.0.0.1:PORT``,
    or ``https://`` with ``tls`` = (certificate, key) files. At the end, responses still open get
    up to ``graceful_shutdown_s`` to finish."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so
    # (without it every keep-alive request waits ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan=lifespan,
            ws="none",
            # h11 and the plain asyncio loop are the quiet, predictable choice for tests; ``fast``
            # (uvloop + httptools) is for doubles that benchmarks page through.
            loop="uvloop" if fast else "asyncio",
            http="httptools" if fast else "h11",
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
            timeout_graceful_shutdown=graceful_shutdown_s,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {startup_timeout_s:g} s")
            time.sleep(0.005)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=max(startup_timeout_s, graceful_shutdown_s + 5))
        sock.close()
