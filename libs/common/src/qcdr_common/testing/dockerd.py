"""A throwaway Docker Engine for tests: its own ``dockerd`` in a temporary directory.

The daemon gets its own socket, ``--data-root`` and ``--exec-root`` in the directory, no iptables
rules, no bridge and the ``vfs`` storage driver, so it needs nothing from the machine but the
binaries (Debian's ``docker.io``) and root. :meth:`DockerDaemon.import_busybox` builds an image
offline (``docker import`` of a root file system holding a static busybox and its applets).

When the daemon cannot start, :class:`DockerDaemonError` says why, with the tail of its log:
tests that need it fail, they are never skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Directories every imported image has: the container roots the node actions' tests use.
IMAGE_DIRS = (
    *("bin", "dev", "etc", "proc", "sys", "tmp", "var/tmp"),
    *("root", "home", "opt", "app", "usr/local/bin", "run"),
)
_LOG_TAIL_LINES = 40


class DockerDaemonError(RuntimeError):
    """dockerd is missing, did not start, or an API call failed."""


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP), i.e. static."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only: the machines here are x86-64
        return False
    end = "<" if data[5] == 1 else ">"
    phoff = struct.unpack_from(f"{end}Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from(f"{end}HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(f"{end}I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> Path:
    for candidate in (shutil.which("busybox"), *BUSYBOX_CANDIDATES):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate)
    raise DockerDaemonError("no statically linked busybox found (apt-get install busybox-static)")


def busybox_rootfs_tar(busybox: Path | None = None) -> bytes:
    """A tar of a minimal root file system: busybox, a symlink per applet, passwd and group."""
    binary = busybox or find_busybox()
    applets = subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    now = int(time.time())

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, now, link, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in IMAGE_DIRS:
            add(directory, tarfile.DIRTYPE, 0o1777 if directory.endswith("tmp") else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary.read_bytes())
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add(
            "etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:\n"
        )
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


@dataclass
class DockerDaemon:
    """``start()`` it, use :attr:`host` (``unix://.../docker.sock``), ``stop()`` it."""

    # short: the exec root holds unix sockets (containerd's), whose paths are limited to 108 bytes
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qd", dir="/tmp")))
    dockerd: str | None = None
    start_timeout_s: float = 60.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://docker", timeout=timeout
        )

    def start(self) -> DockerDaemon:
        binary = self.dockerd or shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(binary).is_file():
            raise DockerDaemonError("dockerd not found (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerDaemonError("dockerd needs root here (it creates cgroups and mounts)")
        cmd = [binary, "--host", self.host, "--data-root", str(self.workdir / "data")]
        cmd += ["--exec-root", str(self.workdir / "x"), "--pidfile", str(self.workdir / "docker.pid")]
        cmd += ["--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs"]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._cleanup()
                raise DockerDaemonError(f"dockerd exited with code {code} at start:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise DockerDaemonError(
            f"dockerd did not answer within {self.start_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self._client(timeout=2.0) as client:
                return client.get("/_ping").text == "OK"
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._client() as client:
            response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise DockerDaemonError(f"{method} {path}: {response.status_code} {response.text.strip()}")
        return response

    def import_busybox(self, tag: str = "qcdr-busybox:test") -> str:
        """``docker import`` a busybox root file system as ``tag``; returns ``tag``."""
        repo, _, version = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        response = self.api(
            "POST",
            "/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": version},
            content=busybox_rootfs_tar(),
            headers={"Content-Type": "application/x-tar"},
        )
        for line in response.text.splitlines():
            message = json.loads(line) if line.strip() else {}
            if message.get("error"):
                raise DockerDaemonError(f"docker import failed: {message['error']}")
        return tag

    def remove_all_containers(self) -> None:
        for container in self.api("GET", "/containers/json", params={"all": "true"}).json():
            self.api("DELETE", f"/containers/{container['Id']}", params={"force": "true", "v": "true"})

    def stop(self, timeout_s: float = 20.0) -> None:
        """Remove the containers, stop dockerd (SIGTERM, then SIGKILL) and delete the directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # stopping the daemon stops its containers anyway; removing them first unmounts cleanly
            with contextlib.suppress(DockerDaemonError, httpx.HTTPError):
                self.remove_all_containers()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self._cleanup()

    def _cleanup(self) -> None:
        # whatever dockerd left mounted below the directory (container shm, netns) before deleting it
        prefix = f"{self.workdir}/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
