"""The current policies as YAML files, named as once mode names them.

Each document goes to its version's file name (``cdr-block-<family>-<date>.yaml``; documents that
share a name share the file, separated by ``---``). Revoked policies are left out. Writing and
pruning are once mode's (``qcdr_response.policies.files``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle.models import PolicyStatus
from qcdr_response.policies.files import HEADER, write_files


async def render(session: AsyncSession) -> dict[str, str]:
    """File name → content, from every policy's current version except revoked ones."""
    by_file: dict[str, list[tuple[tuple[str, str, str], str]]] = defaultdict(list)
    for policy, version in await repo.current_documents(session, exclude_status=PolicyStatus.REVOKED.value):
        by_file[version.filename].append(((policy.kind, policy.namespace, policy.name), version.yaml))
    return {
        filename: HEADER + "---\n".join(text for _, text in sorted(docs))
        for filename, docs in sorted(by_file.items())
    }


def write(output: Path, rendered: dict[str, str]) -> tuple[list[Path], list[Path]]:
    """Write changed files and remove qcdr's files no longer rendered; returns (written, removed)."""
    return write_files(output, rendered)


async def sync(session: AsyncSession, output: Path) -> tuple[list[Path], list[Path]]:
    rendered = await render(session)
    return await asyncio.to_thread(write, output, rendered)
