"""Update one benchmark's section of docs/PERFORMANCE.md, leaving the other sections alone.

Each section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, so every
benchmark can be re-run on its own and still leave an up-to-date document.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

HEADER = """# Performance

Figures written by `make bench` (scripts in `bench/`). Goals come from the issues; a missed goal is
explained under its table. Each section names the machine and the date it was measured on.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    py = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {py}, {platform.system()}"


def update_section(path: Path, name: str, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
