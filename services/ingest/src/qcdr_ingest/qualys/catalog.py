"""The runtime-threat catalog QCR001-QCR040 as data.

Facts (ids, Qualys category names, MITRE technique ids, syscalls, tools, paths, ports) follow the
original project's event catalog; titles and grouping are ours. Used by the demo-data generator,
the API double and the benchmarks, so that demo findings look like what CDR reports.

Severities are on the CDR 1-5 scale: 2 = medium, 3 = high, 4 = critical.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MEDIUM, HIGH, CRITICAL = 2, 3, 4

CLOUD_CREDS = "Cloud_Credentials_Accessed_By_Network_Utility"
SCANNING = "Network_Scanning_Utility"
C2 = "Networking_C2_Communication"
SUSPICIOUS_NET = "Networking_Suspicious_Communication"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    id: str
    title: str
    category: str
    severity: int
    techniques: tuple[str, ...]
    syscalls: tuple[str, ...]
    processes: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    destinations: tuple[str, ...] = ()  # addresses or host names the activity connects to
    arguments: tuple[str, ...] = ()

    @property
    def is_network(self) -> bool:
        return bool(self.ports or self.destinations)


def _e(
    id_: str,
    title: str,
    category: str,
    severity: int,
    techniques: str,
    syscalls: str,
    *,
    processes: str = "",
    files: tuple[str, ...] = (),
    ports: tuple[int, ...] = (),
    destinations: tuple[str, ...] = (),
    arguments: tuple[str, ...] = (),
) -> CatalogEntry:
    return CatalogEntry(
        id=id_,
        title=title,
        category=category,
        severity=severity,
        techniques=tuple(techniques.split()),
        syscalls=tuple(syscalls.split()),
        processes=tuple(processes.split()),
        files=files,
        ports=ports,
        destinations=destinations,
        arguments=arguments,
    )


# fmt: off
CATALOG: tuple[CatalogEntry, ...] = (
    # Breaking out of the container.
    _e("QCR001", "Namespace switch towards the host", "Container_Escape", CRITICAL, "T1611",
       "mount unshare setns", processes="nsenter unshare mount",
       files=("/proc/1/ns/", "/proc/self/ns/"), arguments=("MNT", "CLONE_NEWNS")),
    _e("QCR002", "cgroup release_agent written", "Container_Escape", CRITICAL, "T1611",
       "openat write", processes="sh bash",
       files=("/sys/fs/cgroup/*/release_agent", "/sys/fs/cgroup/*/notify_on_release")),
    # Privilege escalation.
    _e("QCR003", "Search for setuid/setgid files", "Privilege_Escalation", MEDIUM, "T1548.001 T1083",
       "execve", processes="find", arguments=("-perm", "+4000", "-4000", "+2000", "-u=s", "-g=s")),
    _e("QCR004", "setuid bit set on a file", "Privilege_Escalation", CRITICAL, "T1548.001",
       "chmod fchmod fchmodat", processes="chmod", arguments=("4755", "2755", "6755", "u+s", "g+s")),
    _e("QCR005", "File capabilities changed", "Privilege_Escalation", HIGH, "T1548.001 T1068",
       "capset", processes="setcap getcap",
       arguments=("cap_setuid", "cap_setgid", "cap_sys_admin", "cap_net_admin")),
    # Cloud instance metadata (IMDS) credential theft.
    _e("QCR006", "Instance metadata queried for credentials", CLOUD_CREDS, CRITICAL, "T1552.005 T1078.004",
       "connect", processes="curl wget python ruby node", ports=(80, 443),
       destinations=("169.254.169.254", "fd00:ec2::254")),
    _e("QCR007", "GCP metadata server queried", CLOUD_CREDS, CRITICAL, "T1552.005",
       "connect", processes="curl wget", ports=(80,),
       destinations=("169.254.169.254", "metadata.google.internal")),
    _e("QCR008", "Azure instance metadata queried", CLOUD_CREDS, CRITICAL, "T1552.005",
       "connect", processes="curl wget", ports=(80,), destinations=("169.254.169.254",)),
    # Credential files.
    _e("QCR009", "System account files read", "Credential_Access", HIGH, "T1552.001 T1003.008",
       "openat read", processes="cat less head",
       files=("/etc/shadow", "/etc/passwd", "/etc/sudoers", "/etc/ssh/sshd_config", "/root/.ssh/",
              "/home/*/.ssh/")),
    _e("QCR010", "Azure CLI credentials read", "Credential_Access", HIGH, "T1552.001 T1552.004",
       "openat read", processes="cat python",
       files=("/.azure/", "/azure.json", "accessTokens.json", "azureProfile.json")),
    _e("QCR011", "AWS CLI credentials read", "Credential_Access", HIGH, "T1552.001",
       "openat read", processes="cat python", files=("/.aws/credentials", "/.aws/config")),
    _e("QCR012", "Service-account token read", "Credential_Access", MEDIUM, "T1552.007",
       "openat read", processes="cat curl",
       files=("/var/run/secrets/kubernetes.io/serviceaccount/token",)),
    _e("QCR013", "Hunt for private keys", "Credential_Access", HIGH, "T1552.001 T1552.004",
       "execve openat", processes="find grep locate",
       arguments=("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".pem", ".key", ".p12", ".pfx")),
    # Mining.
    _e("QCR014", "Connection to a mining pool port", "Crypto_Mining", HIGH, "T1496",
       "connect sendto", processes="xmrig minerd cpuminer ethminer cgminer bfgminer",
       ports=(3333, 4444, 5555, 8333, 9999, 14433, 14444)),
    _e("QCR015", "Miner binary started", "Crypto_Mining", HIGH, "T1496",
       "execve", processes="xmrig xmr-stak minerd cpuminer cgminer bfgminer ethminer ccminer nheqminer"),
    # Scanning.
    _e("QCR016", "Network scanner run", SCANNING, HIGH, "T1046 T1595",
       "execve socket", processes="nmap masscan zmap rustscan netdiscover arp-scan fping"),
    _e("QCR017", "Raw socket opened", SCANNING, MEDIUM, "T1046", "socket", processes="hping3 nping",
       arguments=("SOCK_RAW",)),
    # Command and control.
    _e("QCR018", "Shell reverse connection", C2, CRITICAL, "T1059.004 T1071.001",
       "execve connect dup2", processes="sh bash dash", arguments=("/dev/tcp/", "/dev/udp/", "0>&1")),
    _e("QCR019", "Python reverse shell", C2, CRITICAL, "T1059.006 T1071.001",
       "execve connect dup2", processes="python python3",
       arguments=("socket", "subprocess", "pty.spawn", "os.dup2")),
    _e("QCR020", "Netcat shell", C2, CRITICAL, "T1059 T1071.001",
       "execve connect dup2", processes="nc ncat netcat nc.traditional nc.openbsd", arguments=("-e", "-c")),
    _e("QCR021", "Tunnelling tool started", C2, HIGH, "T1572 T1048",
       "execve connect", processes="socat stunnel sshuttle chisel ligolo ngrok"),
    _e("QCR022", "Connection to a port favoured by attackers", SUSPICIOUS_NET, HIGH, "T1071",
       "connect", processes="nc python3 bash", ports=(4444, 5555, 6666, 8443, 1337, 31337)),
    # Defence evasion.
    _e("QCR023", "Security agent killed", "Defense_Evasion", HIGH, "T1562.001",
       "kill tkill tgkill", processes="kill pkill killall",
       arguments=("falcon-sensor", "cbagent", "qualys-cloud-agent", "tetragon", "falco", "osquery",
                  "auditd", "cilium-agent")),
    _e("QCR024", "Security tool configuration tampered", "Defense_Evasion", CRITICAL,
       "T1562.001 T1562.004", "openat write unlink", processes="rm sed tee",
       files=("/etc/falco/", "/etc/tetragon/", "/etc/qualys/", "/opt/qualys/", "/var/spool/qualys/")),
    _e("QCR025", "Logs redirected to /dev/null", "Defense_Evasion", HIGH, "T1070.002 T1036",
       "symlink symlinkat unlink", processes="ln rm", files=("/var/log/", "/dev/null")),
    _e("QCR026", "MAC enforcement disabled", "Defense_Evasion", CRITICAL, "T1562.001",
       "write openat", processes="setenforce aa-disable",
       files=("/etc/selinux/config", "/sys/fs/selinux/enforce", "/etc/apparmor.d/")),
    # Persistence.
    _e("QCR027", "Cron entry written", "Persistence", HIGH, "T1053.003",
       "openat write", processes="crontab tee sh",
       files=("/etc/crontab", "/etc/cron.d/", "/etc/cron.daily/", "/var/spool/cron/",
              "/var/spool/cron/crontabs/")),
    _e("QCR028", "systemd unit written", "Persistence", HIGH, "T1543.002",
       "openat write", processes="tee cp systemctl",
       files=("/etc/systemd/system/", "/usr/lib/systemd/system/", "/lib/systemd/system/")),
    _e("QCR029", "SSH authorized_keys changed", "Persistence", HIGH, "T1098.004 T1556",
       "openat write", processes="tee sh",
       files=("/root/.ssh/authorized_keys", "/home/*/.ssh/authorized_keys")),
    _e("QCR030", "Dynamic linker preload set", "Persistence", CRITICAL, "T1574.006 T1055",
       "openat write", processes="tee sh", files=("/etc/ld.so.preload", "/etc/ld.so.conf")),
    _e("QCR031", "Kernel module loaded", "Persistence", CRITICAL, "T1547.006 T1014",
       "init_module finit_module", processes="insmod modprobe"),
    # Execution.
    _e("QCR032", "Obfuscated shell command", "Execution", HIGH, "T1059.004 T1027",
       "execve", processes="sh bash", arguments=("base64", "-d", "| sh", "| bash", "eval", "$(echo")),
    _e("QCR033", "Obfuscated Python one-liner", "Execution", HIGH, "T1059.006 T1027",
       "execve", processes="python python3", arguments=("-c", "base64", "b64decode", "exec(", "eval(")),
    _e("QCR034", "Compiler run in a container", "Execution", MEDIUM, "T1027.004 T1059",
       "execve", processes="gcc g++ clang make cc as ld rustc go"),
    _e("QCR035", "Web server spawned a shell", "Execution", CRITICAL, "T1505.003",
       "execve fork clone", processes="sh bash whoami id uname"),
    # Discovery, lateral movement, impact, collection.
    _e("QCR036", "Kubernetes API probed from a pod", "Discovery", MEDIUM, "T1613 T1552.007",
       "connect", processes="curl kubectl", ports=(443, 6443),
       destinations=("kubernetes.default.svc", "10.96.0.1")),
    _e("QCR037", "SSH from inside a container", "Lateral_Movement", HIGH, "T1021.004",
       "execve connect", processes="ssh scp sftp", ports=(22,)),
    _e("QCR038", "Mass deletion", "Impact", CRITICAL, "T1485 T1070",
       "unlink unlinkat rmdir", processes="rm shred wipe", arguments=("-rf", "-r", "--no-preserve-root")),
    _e("QCR039", "Process memory read", "Collection", CRITICAL, "T1003.007 T1003",
       "ptrace process_vm_readv", processes="gdb strace ltrace gcore",
       files=("/proc/*/mem", "/proc/*/maps", "/dev/mem")),
    _e("QCR040", "Process environment read", "Collection", HIGH, "T1552.007",
       "openat read", processes="cat strings", files=("/proc/*/environ", "/proc/self/environ")),
)
# fmt: on

BY_ID: Mapping[str, CatalogEntry] = MappingProxyType({entry.id: entry for entry in CATALOG})
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(entry.category for entry in CATALOG))
