"""A throwaway containerd with its CRI plugin, for tests of code that talks CRI (the node agent).

It needs Debian's ``containerd`` and ``runc`` (``make test-deps``) and root, and nothing from the
machine's own containerd: its own socket, root and state directories, the ``native`` snapshotter
(no overlay mounts needed), no CNI (the tests' pod sandboxes use the node's network), and
``restrict_oom_score_adj`` (a container may not lower its OOM score below containerd's, which a
nested environment without CAP_SYS_RESOURCE refuses). Images come from
:func:`busybox_oci_archive`, an OCI image layout built here from a static busybox, imported with
``ctr``: nothing is pulled. If containerd cannot start, :class:`ContainerdError` says why, with
its log."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO

from qcdr_common.testing.dockerd import busybox_rootfs_tar

_LOG_TAIL = 40
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ContainerdError(RuntimeError):
    pass


def busybox_oci_archive(name: str, cmd: tuple[str, ...] = ("/bin/sleep", "3600")) -> bytes:
    """An OCI image layout (tar) of one layer, the busybox root file system, named ``name``."""
    layer = busybox_rootfs_tar()
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": list(cmd)},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{_sha(config)}", "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": f"sha256:{layer_digest}", "size": len(layer)}],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": f"sha256:{_sha(manifest)}",
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        for data in (layer, config, manifest):
            files[f"blobs/sha256/{_sha(data)}"] = data
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContainerdDaemon:
    def __init__(self, *, sandbox_image: str = "qcdr.test/busybox:1", start_timeout_s: float = 30.0) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qcdr-containerd-"))
        self.sandbox_image = sandbox_image
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL:])
        except OSError:
            return "(no log)"

    def _config(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return "\n".join(
            [
                "version = 2",
                f'root = "{self.workdir}/root"',
                f'state = "{self.workdir}/state"',
                "[grpc]",
                f'  address = "{self.socket}"',
                f"[{cri}]",
                f'  sandbox_image = "{self.sandbox_image}"',
                "  restrict_oom_score_adj = true",
                f"[{cri}.containerd]",
                '  snapshotter = "native"',
                f"[{cri}.cni]",
                f'  bin_dir = "{self.workdir}/cni-bin"',
                f'  conf_dir = "{self.workdir}/cni-conf"',
                "",
            ]
        )

    def start(self) -> ContainerdDaemon:
        binary = shutil.which("containerd") or "/usr/bin/containerd"
        if not Path(binary).exists() or not (shutil.which("runc") or Path("/usr/sbin/runc").exists()):
            raise ContainerdError("containerd or runc not found (apt-get install containerd runc)")
        config = self.workdir / "config.toml"
        config.write_text(self._config())
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [binary, "--config", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.start_timeout_s
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ContainerdError(f"containerd did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.import_image(busybox_oci_archive(self.sandbox_image))
        return self

    def ctr(self, *args: str, stdin: bytes | None = None) -> str:
        binary = shutil.which("ctr") or "/usr/bin/ctr"
        result = subprocess.run(
            [binary, "--address", str(self.socket), "--namespace", "k8s.io", *args],
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace")

    def import_image(self, archive: bytes) -> None:
        path = self.workdir / "image.tar"
        path.write_bytes(archive)
        self.ctr("images", "import", str(path))

    def stop(self, timeout_s: float = 20.0) -> None:
        if self._process is not None and self._process.poll() is None:
            # the shims outlive containerd by design: kill the tasks first
            for line in self._tasks():
                with_pid = line.split()
                if with_pid:
                    subprocess.run(
                        [
                            shutil.which("ctr") or "/usr/bin/ctr",
                            "--address",
                            str(self.socket),
                            "--namespace",
                            "k8s.io",
                            "tasks",
                            "kill",
                            "--signal",
                            "SIGKILL",
                            with_pid[0],
                        ],
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
            self._process.terminate()
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout_s)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _tasks(self) -> list[str]:
        try:
            return self.ctr("tasks", "list", "--quiet").splitlines()
        except (ContainerdError, subprocess.TimeoutExpired):
            return []

    def __enter__(self) -> ContainerdDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
