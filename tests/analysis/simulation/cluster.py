"""The simulated cluster: 200 workloads in 20 namespaces, each with a normal behaviour.

A workload's behaviour is what the detectors should learn: exec chains (a helper and the binary it
starts, e.g. ``sh -c curl``), destinations (service IPs in 10.96.0.0/12, pod IPs in 10.244.0.0/16, a
few external addresses from the documentation ranges) and files it writes, each picked with Zipf-
skewed weights, and Poisson rates per minute for exec chains, connections and file writes.

Every normal behaviour item is frequent enough to be seen while learning: its rate (the stream's
rate times its weight) is at least :data:`MIN_ITEM_RATE` per minute, i.e. ≥ 18 expected
occurrences in a 6 h learning period (the chance of one item never showing up is e^-18 ≈ 1.5e-8,
for ~4,000 items per seed ≈ 6e-5). A workload gets fewer items rather than rarer ones.

Workloads that share an image run the same binaries (they are the same program) but have their own
destinations, files and rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qcdr_analysis.profiles.identity import workload_key
from qcdr_common.contracts.events.v1 import Workload

from tests.analysis.simulation import CLUSTER

MIN_ITEM_RATE = 0.05  # per minute: every behaviour item occurs ≥ 18 times in 6 h on average
METRICS = ("cpu_cores", "memory_bytes", "syscalls_per_second", "network_tx_bytes_per_second")
NAMESPACES = (
    "payments", "checkout", "catalog", "search", "identity", "orders", "shipping", "inventory",
    "notifications", "analytics", "reporting", "media", "gateway", "messaging", "observability",
    "data", "ml", "billing", "support", "platform",
)  # fmt: skip
STEMS = (
    "ledger", "cart", "price", "quote", "user", "session", "token", "order", "parcel", "stock",
    "mail", "sms", "event", "report", "image", "video", "edge", "queue", "metric", "trace",
    "feature", "model", "invoice", "ticket", "config", "audit", "rating", "review", "promo", "tax",
)  # fmt: skip
ROLES = ("api", "worker", "web", "consumer", "scheduler", "sync", "indexer", "service", "proxy", "processor")
SERVICE_PORTS = (80, 443, 8080, 9090, 5432, 6379, 9092, 3306, 8443)
SHIM = "/usr/bin/containerd-shim-runc-v2"  # parent of a container's first process and of exec probes
SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' generated name suffixes
NODES = tuple(f"node-{i:02d}" for i in range(1, 9))

Step = tuple[str, str, str]  # (binary, parent binary, arguments)


@dataclass(frozen=True)
class Flavour:
    entrypoint: str
    arguments: str
    cwd: str
    chains: tuple[tuple[Step, ...], ...]  # "{entry}" is the entrypoint, "{app}" the workload
    files: tuple[str, ...]
    port: int


_HEALTH = (("/bin/sh", "{entry}", "-c 'curl -fsS http://localhost:{port}/healthz'"),
           ("/usr/bin/curl", "/bin/sh", "-fsS http://localhost:{port}/healthz"))  # fmt: skip
_COMMON: tuple[tuple[Step, ...], ...] = (
    _HEALTH,
    (("/bin/sh", "{entry}", "-c hostname"), ("/bin/hostname", "/bin/sh", "")),
    (("/bin/date", "{entry}", "+%s"),),
    (("/bin/sh", SHIM, "-c 'test -f ready'"),),
    (("/usr/bin/env", "{entry}", ""),),
)
FLAVOURS: dict[str, Flavour] = {
    "go": Flavour("/app/server", "--config config.yaml", "/app", (
        (("/app/healthcheck", SHIM, "--port {port}"),),
        (("/bin/sh", "{entry}", "-c 'uname -r'"), ("/bin/uname", "/bin/sh", "-r")),
    ), ("/tmp/{app}.lock", "/var/log/{app}/app.log", "/app/data/{app}.db"), 8080),
    "java": Flavour("/opt/java/openjdk/bin/java", "-jar app.jar", "/opt/app", (
        (("/opt/java/openjdk/bin/jcmd", "{entry}", "1 GC.heap_info"),),
        (("/bin/bash", SHIM, "-c 'wget -qO- localhost:{port}/actuator/health'"),
         ("/usr/bin/wget", "/bin/bash", "-qO- localhost:{port}/actuator/health")),
    ), ("/opt/app/logs/{app}.log", "/tmp/hsperfdata_app/1", "/opt/app/work/cache.bin"), 8080),
    "python": Flavour("/usr/local/bin/python3.11", "-m gunicorn app:wsgi", "/srv", (
        (("/usr/local/bin/python3.11", "{entry}", "-m gunicorn.worker"),),
        (("/usr/local/bin/python3.11", SHIM, "manage.py check --deploy"),),
    ), ("/tmp/gunicorn-{app}.ctl", "/var/log/{app}/access.log", "/srv/media/upload.part"), 8000),
    "node": Flavour("/usr/local/bin/node", "server.js", "/usr/src/app", (
        (("/usr/local/bin/node", "{entry}", "worker.js"),),
        (("/bin/sh", "{entry}", "-c 'git rev-parse HEAD'"), ("/usr/bin/git", "/bin/sh", "rev-parse HEAD")),
    ), ("/tmp/{app}-session.json", "/usr/src/app/logs/out.log", "/home/node/.npm/_logs/debug.log"), 3000),
    "nginx": Flavour("/usr/sbin/nginx", "-g 'daemon off;'", "/", (
        (("/bin/sh", "{entry}", "-c 'nginx -s reopen'"), ("/usr/sbin/nginx", "/bin/sh", "-s reopen")),
    ), ("/var/log/nginx/access.log", "/var/cache/nginx/proxy_temp/1", "/var/run/nginx.pid"), 80),
    "redis": Flavour("/usr/local/bin/redis-server", "*:6379", "/data", (
        (("/usr/local/bin/redis-cli", SHIM, "ping"),),
        (("/bin/sh", "{entry}", "-c 'redis-cli info persistence'"),
         ("/usr/local/bin/redis-cli", "/bin/sh", "info persistence")),
    ), ("/data/appendonly.aof", "/data/temp-rewriteaof.aof", "/data/dump.rdb"), 6379),
    "postgres": Flavour("/usr/lib/postgresql/16/bin/postgres", "-D pgdata", "/var/lib/postgresql", (
        (("/usr/lib/postgresql/16/bin/pg_isready", SHIM, "-U postgres"),),
        (("/bin/sh", "{entry}", "-c 'pg_archivecleanup wal'"),
         ("/usr/lib/postgresql/16/bin/pg_archivecleanup", "/bin/sh", "wal")),
    ), ("/var/lib/postgresql/data/pg_wal/current", "/var/lib/postgresql/data/base/16384/2619",
        "/var/run/postgresql/.s.PGSQL.5432.lock"), 5432),
    "agent": Flavour("/fluent-bit/bin/fluent-bit", "-c fluent-bit.conf", "/", (
        (("/bin/sh", "{entry}", "-c 'df -k'"), ("/bin/df", "/bin/sh", "-k")),
    ), ("/var/log/flb-storage/tail.0/1-1.flb", "/var/log/flb_kube.db"), 2020),
    "batch": Flavour("/usr/local/bin/python3.11", "-m batch.run", "/job", (
        (("/bin/sh", "{entry}", "-c 'gzip -c chunk'"), ("/bin/gzip", "/bin/sh", "-c chunk")),
    ), ("/tmp/{app}-chunk.csv", "/job/out/part-0001.csv"), 8080),
}  # fmt: skip
# flavour -> (owner kind, share of the cluster); Jobs/CronJobs are a fixed few, long-running
_MIX = (("go", 0.24), ("java", 0.15), ("python", 0.2), ("node", 0.15), ("nginx", 0.08),
        ("redis", 0.05), ("postgres", 0.04), ("agent", 0.09))  # fmt: skip
_KIND = {"redis": "StatefulSet", "postgres": "StatefulSet", "agent": "DaemonSet"}
_BATCH = ("Job", "Job", "CronJob", "CronJob")
_EXTERNAL = tuple(f"198.51.100.{i}" for i in range(10, 40, 3)) + tuple(f"192.0.2.{i}" for i in (7, 33, 81))
_LEVELS = {  # metric -> (median level, log-sd across workloads, relative noise range)
    "cpu_cores": (0.15, 0.8, (0.05, 0.15)),
    "memory_bytes": (256 * 2**20, 0.7, (0.02, 0.06)),
    "syscalls_per_second": (2000.0, 0.8, (0.05, 0.15)),
    "network_tx_bytes_per_second": (50_000.0, 1.0, (0.05, 0.15)),
}


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    ip: str
    container_id: str  # 64 hex digits, without the runtime prefix


@dataclass(frozen=True)
class Spec:
    """One workload and its normal behaviour."""

    index: int
    namespace: str
    kind: str
    name: str
    flavour: str
    image: str  # the reference (name:tag)
    digest: str  # sha256:<64 hex>
    pods: tuple[Pod, ...]
    entrypoint: str
    arguments: str
    cwd: str
    chains: tuple[tuple[Step, ...], ...]
    chain_weights: tuple[float, ...]
    destinations: tuple[tuple[str, int], ...]
    destination_weights: tuple[float, ...]
    files: tuple[str, ...]
    file_weights: tuple[float, ...]
    rates: tuple[float, float, float]  # per minute: exec chains, connects, file writes
    levels: dict[str, float] = field(default_factory=dict)  # metric -> mean level
    noise: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (rel. sd, AR(1) phi)

    @property
    def workload(self) -> Workload:
        """The owner (and image) as the detectors see it; no pod: samples are per workload."""
        return Workload(
            cluster=CLUSTER,
            namespace=self.namespace,
            owner_kind=self.kind,
            owner_name=self.name,
            image=self.image,
            image_digest=self.digest,
        )

    @property
    def key(self) -> str:
        return workload_key(self.workload)

    @property
    def container(self) -> str:
        return self.name


@dataclass(frozen=True)
class Cluster:
    seed: int
    workloads: tuple[Spec, ...]

    def image_binaries(self, digest: str) -> set[str]:
        """Every binary any workload of this image runs (the image's normal executables)."""
        found: set[str] = set()
        for spec in self.workloads:
            if spec.digest == digest:
                found.add(spec.entrypoint)
                found.update(step[0] for chain in spec.chains for step in chain)
        return found

    def image_destinations(self, digest: str) -> set[tuple[str, int]]:
        return {d for spec in self.workloads if spec.digest == digest for d in spec.destinations}

    def namespaces(self) -> set[str]:
        return {spec.namespace for spec in self.workloads}


def zipf(k: int) -> list[float]:
    weights = [1.0 / (i + 1) for i in range(k)]
    total = sum(weights)
    return [w / total for w in weights]


def fit_items(rate: float, wanted: int) -> int:
    """The largest item count ≤ ``wanted`` whose rarest item still has MIN_ITEM_RATE (≥ 1)."""
    k = max(1, wanted)
    while k > 1 and rate * zipf(k)[-1] < MIN_ITEM_RATE:
        k -= 1
    return k


def _suffix(rng: np.random.Generator, length: int) -> str:
    return "".join(SAFE[i] for i in rng.integers(0, len(SAFE), length))


def _hex(rng: np.random.Generator, length: int) -> str:
    return "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, length))


def _pod_names(rng: np.random.Generator, kind: str, name: str, replicas: int) -> list[str]:
    if kind == "Deployment":
        template = _suffix(rng, 10)
        return [f"{name}-{template}-{_suffix(rng, 5)}" for _ in range(replicas)]
    if kind == "StatefulSet":
        return [f"{name}-{i}" for i in range(replicas)]
    if kind == "CronJob":
        scheduled = int(rng.integers(29_000_000, 29_600_000))  # minutes since the epoch, as CronJob names
        return [f"{name}-{scheduled}-{_suffix(rng, 5)}" for _ in range(replicas)]
    return [f"{name}-{_suffix(rng, 5)}" for _ in range(replicas)]  # DaemonSet, Job


def _service_ip(rng: np.random.Generator) -> str:
    """An address in the default service CIDR, 10.96.0.0/12."""
    return f"10.{96 + int(rng.integers(0, 16))}.{int(rng.integers(0, 256))}.{int(rng.integers(1, 255))}"


def _pick(rng: np.random.Generator, items: Sequence[Any], k: int) -> list[Any]:
    order = rng.permutation(len(items))[: min(k, len(items))]
    return [items[i] for i in order]


def _fill(chain: tuple[Step, ...], entry: str, port: int) -> tuple[Step, ...]:
    return tuple(
        (binary, parent.replace("{entry}", entry), args.replace("{port}", str(port)))
        for binary, parent, args in chain
    )


def build_cluster(seed: int, workloads: int = 200, namespaces: int = 20) -> Cluster:
    """The cluster of ``seed`` (deterministic: one numpy generator, its own stream of the seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    ns_weights = rng.dirichlet(np.full(namespaces, 4.0))
    flavours = [name for name, _ in _MIX]
    shares = np.array([share for _, share in _MIX])
    kinds_left = list(_BATCH)
    services = [(_service_ip(rng), int(rng.choice(SERVICE_PORTS))) for _ in range(80)]
    stateful_pods: list[tuple[str, int]] = []
    used_names: set[tuple[str, str]] = set()
    specs: list[Spec] = []
    pod_counter = 0
    for index in range(workloads):
        namespace = NAMESPACES[index % namespaces] if index < namespaces else None
        if namespace is None:
            namespace = NAMESPACES[int(rng.choice(namespaces, p=ns_weights))]
        if kinds_left and index % max(1, workloads // len(_BATCH)) == 7 % max(1, workloads // len(_BATCH)):
            flavour, kind = "batch", kinds_left.pop()
        else:
            flavour = flavours[int(rng.choice(len(flavours), p=shares / shares.sum()))]
            kind = _KIND.get(flavour, "Deployment")
        while True:
            name = f"{STEMS[int(rng.integers(0, len(STEMS)))]}-{ROLES[int(rng.integers(0, len(ROLES)))]}"
            if (namespace, name) not in used_names:
                used_names.add((namespace, name))
                break
        flav = FLAVOURS[flavour]
        shared = [s for s in specs if s.flavour == flavour and s.kind == kind]
        base = shared[int(rng.integers(0, len(shared)))] if shared and rng.random() < 0.1 else None
        replicas = 1 if kind in ("Job", "CronJob") else int(rng.integers(1, 5))
        pods = []
        for pod_name in _pod_names(rng, kind, name, replicas):
            pod_counter += 1
            node = NODES[int(rng.integers(0, len(NODES)))]
            ip = f"10.244.{NODES.index(node)}.{pod_counter % 250 + 2}"
            pods.append(Pod(pod_name, node, ip, _hex(rng, 64)))
        total = float(np.clip(rng.lognormal(np.log(1.0), 0.5), 0.4, 5.0))
        exec_share, connect_share = rng.uniform(0.15, 0.35), rng.uniform(0.35, 0.55)
        rates = (total * exec_share, total * connect_share, total * (1 - exec_share - connect_share))
        if base is not None:  # same image: the same program, so the same binaries
            image, digest, chains = base.image, base.digest, base.chains
            k = fit_items(rates[0], len(chains))
            chains = chains[:k]
        else:
            image = f"registry.example.com/{namespace}/{name}:1.{rng.integers(0, 30)}.{rng.integers(0, 9)}"
            digest = f"sha256:{_hex(rng, 64)}"
            pool = [_fill(c, flav.entrypoint, flav.port) for c in flav.chains + _COMMON]
            chains = tuple(_pick(rng, pool, fit_items(rates[0], int(rng.integers(2, 6)))))
        chain_weights = tuple(zipf(len(chains)))
        destinations = _pick(rng, services, int(rng.integers(1, 4)))
        if stateful_pods and rng.random() < 0.3:
            destinations.append(stateful_pods[int(rng.integers(0, len(stateful_pods)))])
        if rng.random() < 0.25:
            destinations.append((_EXTERNAL[int(rng.integers(0, len(_EXTERNAL)))], 443))
        destinations = list(dict.fromkeys(destinations))[: fit_items(rates[1], len(destinations))]
        files = [p.replace("{app}", name) for p in _pick(rng, flav.files, int(rng.integers(1, 4)))]
        files = files[: fit_items(rates[2], len(files))]
        levels: dict[str, float] = {}
        noise: dict[str, tuple[float, float]] = {}
        for metric, (median, spread, (low, high)) in _LEVELS.items():
            levels[metric] = float(median * rng.lognormal(0.0, spread))
            noise[metric] = (float(rng.uniform(low, high)), float(rng.uniform(0.6, 0.9)))
        if kind == "StatefulSet":
            stateful_pods.extend((pod.ip, flav.port) for pod in pods)
        specs.append(
            Spec(
                index=index,
                namespace=namespace,
                kind=kind,
                name=name,
                flavour=flavour,
                image=image,
                digest=digest,
                pods=tuple(pods),
                entrypoint=flav.entrypoint,
                arguments=flav.arguments,
                cwd=flav.cwd,
                chains=chains,
                chain_weights=chain_weights,
                destinations=tuple(destinations),
                destination_weights=tuple(zipf(len(destinations))),
                files=tuple(files),
                file_weights=tuple(zipf(len(files))),
                rates=rates,
                levels=levels,
                noise=noise,
            )
        )
    return Cluster(seed, tuple(specs))
