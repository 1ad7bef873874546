"""Syslog: RFC 5424 messages over UDP (RFC 5426), TCP with octet counting (RFC 6587) or TLS (RFC 5425).

Delivery is as good as each transport allows, and no better:
- UDP is fire-and-forget: a datagram handed to the kernel is ``delivered``. Nothing comes back, so
  a receiver that is down loses what was sent; only a refusal the kernel already knows of (ICMP port
  unreachable from an earlier datagram) turns the rest of the batch into ``retry``.
- TCP and TLS keep one connection (re-opened when the receiver closed it or a write failed). A batch
  written and drained to the kernel is ``delivered``; a connection that cannot be opened is
  ``retry``; a write that fails or stalls past ``timeout_s`` is ``unknown`` (some of it may have
  arrived), so the worker sends it again and the receiver may see a delivery id twice.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import Literal

from pydantic import Field, model_validator
from qcdr_common.tls_files import ca_context, load_client_certificate

from qcdr_response.outputs.base import Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks import _syslog_format as fmt
from qcdr_response.outputs.tls import CaFile

_DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}


class SyslogConfig(SinkConfig):
    type: Literal["syslog"] = "syslog"
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="Default 514 (udp, tcp), 6514 (tls).")
    protocol: Literal["udp", "tcp", "tls"] = "tcp"
    format: Literal["rfc5424", "cef"] = Field(default="rfc5424", description="cef: a CEF:0 record as MSG.")
    facility: fmt.Facility = "local4"
    app_name: str = Field(default="qcdr", pattern=r"^[!-~]{1,48}$")
    hostname: str | None = Field(default=None, pattern=r"^[!-~]{1,255}$", description="Default: this host.")
    sd_id: str = Field(
        default="qcdr@32473",
        pattern=r"^[!#-<>-\\^-~]{1,32}$",  # SD-NAME: printable US-ASCII except = ] "
        description="SD-ID of the structured data; 32473 is the documentation enterprise number.",
    )
    max_message_bytes: int = Field(default=8192, ge=480, le=65_000, description="MSG is cut to fit.")
    batch_size: int = Field(default=100, ge=1, le=10_000)
    verify_tls: bool = True
    ca_file: CaFile | None = Field(default=None, description="PEM CA bundle (default: the system's).")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    key_file: str | None = Field(default=None, description="Its key, unless in cert_file.")
    tls_server_name: str | None = Field(default=None, description="Name to verify; default: host.")
    cef_vendor: str = "qcdr"
    cef_product: str = "qcdr"
    cef_version: str = "1.0"

    @model_validator(mode="after")
    def _tls_options_need_tls(self) -> SyslogConfig:
        tls_set = [k for k in ("ca_file", "cert_file", "key_file", "tls_server_name") if getattr(self, k)]
        if tls_set and self.protocol != "tls":
            raise ValueError(f"{', '.join(tls_set)} only apply to protocol tls")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        if self.cert_file:  # loaded now, so a bad file is a configuration error, not a failing send
            load_client_certificate(ssl.create_default_context(), self.cert_file, self.key_file)
        return self

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.protocol]


class SyslogSink(Sink[SyslogConfig]):
    sink_type = "syslog"
    config_model = SyslogConfig

    def __init__(self, config: SyslogConfig) -> None:
        super().__init__(config)
        self._hostname = config.hostname or socket.gethostname()
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: socket.socket | None = None

    def __repr__(self) -> str:
        return f"SyslogSink({self.describe()})"

    def describe(self) -> str:
        c = self.config
        return f"syslog {c.protocol}://{c.host}:{c.effective_port} {c.format} facility={c.facility}"

    def frame(self, message: OutputMessage) -> bytes:
        """The syslog message (without transport framing)."""
        c = self.config
        msg: str | Callable[[int], str]
        if c.format == "cef":  # the record shortens its own values to the room left, keeping it parseable
            msg = partial(fmt.cef_msg, message, c.cef_vendor, c.cef_product, c.cef_version)
        else:
            msg = fmt.text_msg(message)
        return fmt.rfc5424(
            message,
            facility=c.facility,
            hostname=self._hostname,
            app_name=c.app_name,
            sd_id=c.sd_id,
            msg=msg,
            max_bytes=c.max_message_bytes,
        )

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        if not messages:
            return []
        frames = [self.frame(m) for m in messages]
        if self.config.protocol == "udp":
            return await self._send_udp(frames)
        return await self._send_stream(frames)

    async def _send_udp(self, frames: list[bytes]) -> list[Outcome]:
        try:
            sock = await self._udp_socket()
        except OSError as exc:
            return [Outcome(Status.RETRY, f"udp: {exc}")] * len(frames)
        outcomes: list[Outcome] = []
        for frame in frames:
            try:
                sock.send(frame)
            except OSError as exc:
                # a refusal the kernel knows of, or a full buffer: this datagram and the rest were not sent
                self._close_udp()
                detail = f"udp not sent: {type(exc).__name__}: {exc}"
                return outcomes + [Outcome(Status.RETRY, detail)] * (len(frames) - len(outcomes))
            outcomes.append(Outcome(Status.DELIVERED, "udp datagram sent (no acknowledgement in syslog/udp)"))
        return outcomes

    async def _udp_socket(self) -> socket.socket:
        if self._udp is None:
            c = self.config
            infos = await asyncio.get_running_loop().getaddrinfo(
                c.host, c.effective_port, type=socket.SOCK_DGRAM
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self._udp = sock
        return self._udp

    def _close_udp(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def _send_stream(self, frames: list[bytes]) -> list[Outcome]:
        n, c = len(frames), self.config
        payload = b"".join(fmt.octet_counted(frame) for frame in frames)
        async with self._lock:  # one connection: batches go out whole, one after another
            try:
                async with asyncio.timeout(c.timeout_s):
                    writer = await self._connection()
            except (OSError, TimeoutError, ValueError) as exc:
                await self._drop()
                return [Outcome(Status.RETRY, f"{c.protocol} connect: {type(exc).__name__}: {exc}")] * n
            try:
                writer.write(payload)
                async with asyncio.timeout(c.timeout_s):
                    await writer.drain()
            except (OSError, TimeoutError) as exc:
                await self._drop()
                detail = f"{c.protocol} write failed, part may have arrived: {type(exc).__name__}: {exc}"
                return [Outcome(Status.UNKNOWN, detail)] * n
        return [Outcome(Status.DELIVERED, f"written to the {c.protocol} stream")] * n

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and self._reader is not None:
            # the receiver never writes: EOF or a closing transport means it hung up, so reconnect
            if not self._writer.is_closing() and not self._reader.at_eof():
                return self._writer
            await self._drop()
        c = self.config
        context = self._tls_context() if c.protocol == "tls" else None
        reader, writer = await asyncio.open_connection(
            c.host,
            c.effective_port,
            ssl=context,
            server_hostname=(c.tls_server_name or c.host) if context else None,
        )
        self._reader, self._writer = reader, writer
        return writer

    def _tls_context(self) -> ssl.SSLContext:
        c = self.config
        context = ca_context(c.ca_file) if c.ca_file else ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9662 updates RFC 5425 to TLS 1.2+
        if not c.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if c.cert_file:
            load_client_certificate(context, c.cert_file, c.key_file)
        return context

    async def _drop(self, *, abort: bool = True) -> None:
        """Forget the connection; ``abort`` discards what is still buffered (after a failure)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        if abort:
            writer.transport.abort()
        else:
            writer.close()
        with suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop(abort=False)
        self._close_udp()


SINKS.add("syslog", SyslogSink, __name__)
