"""Write the bundled offline threat-intel feed set used by ``make demo`` (our own synthetic data).

    uv run python examples/generate_feeds.py      # -> examples/feeds/*.txt and examples/feeds.yaml

Each file imitates a real feed's *format* (plain IPs, a Tor-style list, IPsum-style ``IP<TAB>count``,
Spamhaus ``CIDR ; SBL`` lines, an empty Feodo list) with made-up addresses from a fixed seed, plus
the dirt real feeds carry: comments, blank lines, garbage, IPv6, and private or bogon entries that
the never-block set must remove. No line is copied from any real feed.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261204

# Public /8s used for synthetic addresses (none private, reserved or documentation).
PUBLIC_FIRST_OCTETS = (
    5,
    23,
    31,
    37,
    45,
    46,
    62,
    77,
    80,
    85,
    91,
    94,
    103,
    109,
    141,
    176,
    178,
    185,
    193,
    194,
    195,
)
BOGONS = (
    "10.1.2.3",
    "192.168.7.7",
    "127.0.0.1",
    "169.254.169.254",
    "100.64.0.9",
    "0.0.0.0/8",
    "192.0.2.44",
    "fd00::1",
    "::1",
)


def _ip(rng: random.Random) -> str:
    return (
        f"{rng.choice(PUBLIC_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    )


def _v6(rng: random.Random) -> str:
    groups = (rng.randrange(0x1000, 0xFFFF), rng.randrange(0xFFFF), rng.randrange(1, 0xFFFF))
    return f"2a0{rng.randrange(1, 10)}:{groups[0]:x}:{groups[1]:x}::{groups[2]:x}"


def _write(name: str, lines: list[str]) -> None:
    (HERE / "feeds" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    shared = [_ip(rng) for _ in range(60)]  # listed by several feeds: higher confidence

    compromised = [
        "# demo compromised hosts (synthetic)",
        "#",
        *shared[:40],
        *(_ip(rng) for _ in range(400)),
        "",
        "not-an-ip",
        *BOGONS[:3],
    ]
    _write("compromised.txt", compromised)

    tor = [
        "# demo exit relays (synthetic)",
        *(_ip(rng) for _ in range(300)),
        *(_v6(rng) for _ in range(40)),
        *shared[20:50],
    ]
    _write("tor-exits.txt", tor)

    ipsum = ["# demo aggregate: IP<TAB>number of lists (synthetic)", "# IP\tcount"]
    ipsum += [f"{ip}\t{rng.randint(1, 8)}" for ip in (*shared, *(_ip(rng) for _ in range(900)))]
    ipsum += [f"{b}\t3" for b in BOGONS[:2]] + ["garbage\tline\twith\ttabs"]
    _write("aggregate.txt", ipsum)

    drop = ["; demo hijacked netblocks (synthetic)", "; Last-Modified: synthetic"]
    for i in range(25):
        first = rng.choice(PUBLIC_FIRST_OCTETS)
        drop.append(f"{first}.{rng.randrange(256)}.{rng.randrange(0, 256, 4)}.0/22 ; SBL{600000 + i}")
    drop += ["2a0d:5600::/29 ; SBL699001", "10.0.0.0/8 ; SBL699002"]
    _write("drop.txt", drop)

    _write("c2-empty.txt", ["# demo C2 list: currently empty after a takedown (synthetic)", "#"])

    (HERE / "feeds.yaml").write_text(
        """# Bundled offline feed set for the demo. Paths are relative to this file; `qcdr demo` serves the
# files on 127.0.0.1 so the real HTTP fetcher (conditional GET, size limit, stale copies) runs.
- {name: demo-c2, url: "file:feeds/c2-empty.txt", category: c2, may_be_empty: true}
- {name: demo-tor-exit, url: "file:feeds/tor-exits.txt", category: tor}
- {name: demo-compromised, url: "file:feeds/compromised.txt", category: compromised}
- {name: demo-aggregate, url: "file:feeds/aggregate.txt", category: scanner, format: first-column}
- {name: demo-drop, url: "file:feeds/drop.txt", category: hijacked, format: spamhaus, min_interval: 1h}
""",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
