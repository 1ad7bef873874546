"""Syslog sink against a real rsyslogd (UDP, TCP with octet counting, TLS and mutual TLS through the
gtls driver); every received line must parse as RFC 5424. Connection handling (one connection,
reconnect, a stalled receiver) is checked against small asyncio servers that count connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import certifi
import pytest
from pydantic import ValidationError
from qcdr_common.testing.sinks.rsyslog import Rsyslog, run_rsyslog
from qcdr_common.testing.sinks.syslog_parsers import parse_cef, parse_rfc5424
from qcdr_response.outputs.base import Status
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.registry import load_sinks
from qcdr_response.outputs.sinks.syslog import SyslogConfig, SyslogSink

from tests.response.outputs.sinks._siem_messages import make_finding, make_message, make_messages

LOCAL4 = 20


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    with run_rsyslog(tmp_path_factory.mktemp("rsyslog")) as server:
        yield server


def make_sink(port: int, **overrides: Any) -> SyslogSink:
    values: dict[str, Any] = {
        "name": "syslog",
        "host": "127.0.0.1",
        "port": port,
        "hostname": "qcdr-response-0",
        "timeout_s": 2.0,
    }
    values.update(overrides)
    return SyslogSink(SyslogConfig.model_validate(values))


async def send(sink: SyslogSink, messages: list[OutputMessage]) -> list[Status]:
    try:
        return [o.status for o in await sink.send(messages)]
    finally:
        await sink.aclose()


def received(rsyslog: Rsyslog, messages: list[OutputMessage]) -> list[str]:
    ids = {f'deliveryId="{m.id}"' for m in messages}
    return rsyslog.wait_for_lines(lambda line: any(i in line for i in ids), len(messages))


def tricky_message() -> OutputMessage:
    finding = make_finding(
        category='Escape"Test]\\Category', namespace="team-a", pod="web-0", title="shell | spawned \\ here"
    )
    return make_message(finding, group_key='grp"]\\')


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
async def test_rfc5424_reaches_rsyslog(rsyslog: Rsyslog, protocol: str) -> None:
    port = {"udp": rsyslog.udp_port, "tcp": rsyslog.tcp_port, "tls": rsyslog.tls_port}[protocol]
    extra = {"ca_file": str(rsyslog.pki.ca_cert)} if protocol == "tls" else {}
    messages = [tricky_message(), *make_messages(2)]
    sink = make_sink(port, protocol=protocol, **extra)

    assert await send(sink, messages) == [Status.DELIVERED] * 3

    by_id = {}
    for line in received(rsyslog, messages):
        parsed = parse_rfc5424(line)
        by_id[parsed.structured_data["qcdr@32473"]["deliveryId"]] = parsed
    assert set(by_id) == {m.id for m in messages}
    for message in messages:
        parsed = by_id[message.id]
        assert (parsed.facility, parsed.severity, parsed.version) == (LOCAL4, 3, 1)  # high → error
        assert parsed.timestamp == message.last_seen
        assert (parsed.hostname, parsed.app_name, parsed.procid, parsed.msgid) == (
            "qcdr-response-0",
            "qcdr",
            None,
            "alert",
        )
        finding = message.finding
        assert parsed.structured_data == {
            "qcdr@32473": {
                "deliveryId": message.id,
                "groupKey": message.group_key,
                "count": "1",
                "findingId": finding.id,
                "severity": "high",
                "category": finding.category,
                "cluster": "prod-eu",
                "namespace": finding.workload.namespace or "",
                "pod": finding.workload.pod or "",
            }
        }
        assert parsed.msg == message.summary()


async def test_mutual_tls_with_a_client_certificate(rsyslog: Rsyslog) -> None:
    pki = rsyslog.pki
    sink = make_sink(
        rsyslog.mtls_port,
        protocol="tls",
        ca_file=str(pki.ca_cert),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        tls_server_name="localhost",
    )
    messages = make_messages(2)
    assert await send(sink, messages) == [Status.DELIVERED] * 2
    assert len(received(rsyslog, messages)) == 2


async def test_cef_as_msg(rsyslog: Rsyslog) -> None:
    finding = make_finding(
        title="shell | spawned \\ here",
        category="Reverse|Shell",
        explanation="ran sh -c 'a=b'\nthen exited",
        severity="critical",
        network={"ip": "203.0.113.9", "port": 4444, "domain": "c2.example"},
    )
    message = make_message(finding, count=3, link="https://console.example/f?id=1&x=2")
    sink = make_sink(rsyslog.tcp_port, format="cef", facility="auth")
    assert await send(sink, [message]) == [Status.DELIVERED]

    (line,) = received(rsyslog, [message])
    parsed = parse_rfc5424(line)
    assert (parsed.facility, parsed.severity) == (4, 2)  # auth, critical
    assert parsed.structured_data["qcdr@32473"]["count"] == "3"
    cef = parse_cef(parsed.msg)
    assert (cef.version, cef.vendor, cef.product, cef.device_version) == (0, "qcdr", "qcdr", "1.0")
    assert cef.signature_id == "Reverse|Shell"
    assert cef.name == "shell | spawned \\ here (x3)"
    assert cef.severity == "10"
    ext = cef.extensions
    assert ext["msg"] == "ran sh -c 'a=b'\nthen exited"
    assert ext["externalId"] == message.id
    assert ext["cnt"] == "3"
    assert ext["cat"] == "Reverse|Shell"
    assert (ext["cs1Label"], ext["cs1"]) == ("groupKey", message.group_key)
    assert (ext["cs2Label"], ext["cs2"]) == ("findingId", finding.id)
    assert (ext["cs3"], ext["cs4"], ext["cs5"], ext["cs6"]) == ("payments", "api-7d9f-x2", "prod-eu", "T1046")
    assert (ext["dst"], ext["dpt"], ext["dhost"]) == ("203.0.113.9", "4444", "c2.example")
    assert (ext["sproc"], ext["filePath"]) == ("nmap", "/usr/bin/nmap")
    assert ext["request"] == "https://console.example/f?id=1&x=2"
    assert ext["rt"] == str(int(message.last_seen.timestamp() * 1000))
    assert ext["start"] == str(int(message.first_seen.timestamp() * 1000))


@pytest.mark.parametrize(
    ("severity", "facility", "pri"),
    [("critical", "local4", 162), ("high", "local0", 131), ("medium", "auth", 36), ("low", "user", 13),
     ("info", "local7", 190)],
)  # fmt: skip
async def test_severity_and_facility_make_the_pri(
    rsyslog: Rsyslog, severity: str, facility: str, pri: int
) -> None:
    message = make_message(make_finding(severity=severity))
    assert await send(make_sink(rsyslog.udp_port, protocol="udp", facility=facility), [message]) == [
        Status.DELIVERED
    ]
    (line,) = received(rsyslog, [message])
    assert line.startswith(f"<{pri}>1 ")


async def test_a_long_msg_is_cut_to_the_limit(rsyslog: Rsyslog) -> None:
    message = make_message(make_finding(title="é" * 3000))
    assert await send(make_sink(rsyslog.udp_port, protocol="udp", max_message_bytes=600), [message]) == [
        Status.DELIVERED
    ]
    (line,) = received(rsyslog, [message])
    assert len(line.encode()) <= 600
    parsed = parse_rfc5424(line)
    assert parsed.msg.startswith("[HIGH] éé")
    assert parsed.structured_data["qcdr@32473"]["deliveryId"] == message.id


@pytest.mark.parametrize("max_message_bytes", [480, 8192])
def test_a_long_cef_record_is_shortened_and_still_parses(max_message_bytes: int) -> None:
    """Cutting the CEF record's tail would drop Severity and the whole extension: a long title (a drift
    title quoting a long non-ASCII path) and explanation are shortened inside the record instead."""
    path = "/opt/" + "/".join(["数据" * 100] * 15)  # 9 KB of UTF-8, shorter than PATH_MAX
    finding = make_finding(severity="critical", title=f"New executable {path}", explanation=f"{path} ran")
    message = make_message(finding)
    sink = make_sink(514, format="cef", max_message_bytes=max_message_bytes)

    frame = sink.frame(message)
    assert len(frame) <= max_message_bytes
    cef = parse_cef(parse_rfc5424(frame.decode()).msg)
    assert cef.name.startswith("New executable")
    assert cef.name.endswith("…")
    assert len(cef.name) <= 512  # the CEF spec's bound for Name
    assert cef.severity == "10"
    assert cef.extensions["externalId"] == message.id
    assert cef.extensions.get("msg", "…").endswith("…")  # shortened, or left out of the smallest record


def test_a_zero_time_has_a_four_digit_year_and_no_cef_times() -> None:
    """Go's zero time (0001-01-01, a "no time" placeholder) must still give RFC 5424's 4DIGIT year; CEF's
    rt/start/end are epoch milliseconds, where a time before 1970 is no valid value, so they are left out."""
    zero = datetime(1, 1, 1, tzinfo=UTC)
    message = make_message(make_finding(event_time=zero), first_seen=zero, last_seen=zero)

    parsed = parse_rfc5424(make_sink(514, format="cef").frame(message).decode())
    assert parsed.timestamp == zero
    cef = parse_cef(parsed.msg)
    assert cef.extensions["externalId"] == message.id
    assert not {"rt", "start", "end"} & cef.extensions.keys()


async def test_tls_verifies_the_server_by_default(rsyslog: Rsyslog) -> None:
    untrusted = make_sink(rsyslog.tls_port, protocol="tls")  # the system CAs do not know the test CA
    wrong_name = make_sink(
        rsyslog.tls_port, protocol="tls", ca_file=str(rsyslog.pki.ca_cert), tls_server_name="other.example"
    )
    unverified = make_sink(rsyslog.tls_port, protocol="tls", verify_tls=False)
    for sink in (untrusted, wrong_name):
        try:
            outcomes = await sink.send(make_messages(1))
        finally:
            await sink.aclose()
        assert outcomes[0].status is Status.RETRY
        assert "CERTIFICATE_VERIFY_FAILED" in outcomes[0].detail
    messages = make_messages(1)
    assert await send(unverified, messages) == [Status.DELIVERED]
    received(rsyslog, messages)


async def test_connection_refused_is_retried() -> None:
    sink = make_sink(free_port(), protocol="tcp")
    try:
        outcomes = await sink.send(make_messages(2))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.RETRY] * 2
    assert "ConnectionRefusedError" in outcomes[0].detail


async def test_udp_is_fire_and_forget() -> None:
    sink = make_sink(free_port(socket.SOCK_DGRAM), protocol="udp")
    try:
        first = await sink.send(make_messages(1))  # nobody listens, nobody says so: "delivered"
        await asyncio.sleep(0.1)  # the ICMP port unreachable comes back
        second = await sink.send(make_messages(2))  # the kernel now knows: not sent
    finally:
        await sink.aclose()
    assert first[0].status is Status.DELIVERED
    assert [o.status for o in second] == [Status.RETRY] * 2
    assert "ConnectionRefusedError" in second[0].detail


class FrameServer:
    """Reads octet-counted frames; ``close_after`` frames closes the connection (first one only)."""

    def __init__(self, close_after: int | None = None) -> None:
        self.close_after = close_after
        self.connections = 0
        self.frames: list[tuple[int, bytes]] = []
        self.closed = asyncio.Event()
        self.arrived = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                length = int((await reader.readuntil(b" "))[:-1])
                self.frames.append((number, await reader.readexactly(length)))
                self.arrived.set()
                if number == 1 and self.close_after and len(self.frames) >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if number == 1:
                self.closed.set()


@asynccontextmanager
async def frame_server(close_after: int | None = None) -> AsyncIterator[tuple[FrameServer, int]]:
    server = FrameServer(close_after)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


async def wait_frames(server: FrameServer, count: int) -> None:
    async with asyncio.timeout(5):
        while len(server.frames) < count:
            server.arrived.clear()
            await server.arrived.wait()


async def test_tcp_keeps_one_connection_for_every_batch() -> None:
    async with frame_server() as (server, port):
        sink = make_sink(port)
        try:
            for _ in range(3):
                assert [o.status for o in await sink.send(make_messages(2))] == [Status.DELIVERED] * 2
            await wait_frames(server, 6)
        finally:
            await sink.aclose()
    assert server.connections == 1
    assert all(parse_rfc5424(frame.decode()) for _, frame in server.frames)


async def test_tcp_reconnects_after_the_receiver_hung_up() -> None:
    async with frame_server(close_after=1) as (server, port):
        sink = make_sink(port)
        try:
            first = await sink.send(make_messages(1))
            async with asyncio.timeout(5):
                await server.closed.wait()
            await asyncio.sleep(0.05)  # the FIN reaches the client
            second = await sink.send(make_messages(1))
            await wait_frames(server, 2)
        finally:
            await sink.aclose()
    assert [first[0].status, second[0].status] == [Status.DELIVERED, Status.DELIVERED]
    assert server.connections == 2
    assert [number for number, _ in server.frames] == [1, 2]


async def test_a_receiver_that_stops_reading_makes_the_batch_unknown() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # never accepts: the kernel queues the connection and stops taking data
    port = listener.getsockname()[1]
    messages = make_messages(120, finding=make_finding(title="x" * 64_000))
    sink = make_sink(port, timeout_s=0.5, max_message_bytes=65_000, batch_size=120)
    try:
        outcomes = await sink.send(messages)
    finally:
        await sink.aclose()
        listener.close()
    assert {o.status for o in outcomes} == {Status.UNKNOWN}
    assert "TimeoutError" in outcomes[0].detail


def test_config() -> None:
    config = SyslogConfig.model_validate({"name": "syslog", "host": "siem.example"})
    assert (config.protocol, config.effective_port, config.format, config.facility) == (
        "tcp",
        514,
        "rfc5424",
        "local4",
    )
    assert (config.sd_id, config.batch_size, config.verify_tls) == ("qcdr@32473", 100, True)
    assert SyslogConfig(name="s", host="h", protocol="tls").effective_port == 6514
    with pytest.raises(ValidationError, match="only apply to protocol tls"):
        # a loadable bundle: the CA file itself is checked before this rule
        SyslogConfig.model_validate({"name": "s", "host": "h", "protocol": "tcp", "ca_file": certifi.where()})
    with pytest.raises(ValidationError, match="key_file needs cert_file"):
        SyslogConfig.model_validate({"name": "s", "host": "h", "protocol": "tls", "key_file": "/k.pem"})
    for bad in ({"facility": "local9"}, {"sd_id": "has space"}, {"sd_id": "a=b"}, {"address": "h:514"}):
        with pytest.raises(ValidationError):
            SyslogConfig.model_validate({"name": "s", "host": "h", **bad})
    sink = SyslogSink(config)
    assert sink.describe() == "syslog tcp://siem.example:514 rfc5424 facility=local4"
    assert repr(sink) == f"SyslogSink({sink.describe()})"
    assert load_sinks().get("syslog") is SyslogSink
