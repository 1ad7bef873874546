"""Conformance with upstream pod-security-admission's own fixtures (``../shared``, never copied).

For every upstream version v1.0 … v1.37, resolved to its fixture folder through VERSION_MAP.txt:
every ``pass`` fixture is allowed and every ``fail`` fixture denied at its level and version, with
the fixture's check (its file name minus the trailing number) or the restricted check that
overrides it at that version among the violations. One test per fixture and version, so a failure
names the file.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_admission.pss import LATEST_MINOR, check_ids, evaluate, pod_spec_of
from qcdr_common.testing.plugin import shared_dir

pytestmark = pytest.mark.shared

CORPUS = Path("corpora/pss")
# baseline check -> (the restricted check replacing it at the restricted level, from v1.<minor>),
# as the upstream library declares them
OVERRIDDEN_BY = {
    "hostpathvolumes": ("restrictedvolumes", 0),
    "seccompprofile_baseline": ("seccompprofile_restricted", 19),
    "capabilities_baseline": ("capabilities_restricted", 22),
    "procmount": ("procmount_restricted", 35),
}


def version_map(root: Path) -> dict[tuple[str, str], str]:
    """(level, version) -> the fixture folder with its content."""
    folders = {}
    for line in (root / "VERSION_MAP.txt").read_text().splitlines():
        if not line.strip():
            continue
        level, version, how, *same_as = line.split()
        folders[(level, version)] = version if how == "kept" else same_as[0]
    return folders


def cases() -> list[Any]:
    shared = shared_dir()
    if shared is None or not (shared / CORPUS / "VERSION_MAP.txt").is_file():
        return []
    root = shared / CORPUS
    found = []
    for (level, version), folder in sorted(
        version_map(root).items(), key=lambda item: (item[0][0], int(item[0][1].split(".")[1]))
    ):
        for outcome in ("pass", "fail"):
            for path in sorted((root / "test/testdata" / level / folder / outcome).glob("*.yaml")):
                found.append(
                    pytest.param(level, version, outcome, path, id=f"{level}-{version}-{outcome}/{path.name}")
                )
    return found


CASES = cases()


@functools.cache
def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def test_corpus_present(shared_path: Path) -> None:
    """The corpus must be there (CI fails without it rather than running no conformance case)."""
    root = shared_path / CORPUS
    folders = version_map(root)
    expected = {
        (level, f"v1.{minor}") for level in ("baseline", "restricted") for minor in range(LATEST_MINOR + 1)
    }
    assert set(folders) == expected, "VERSION_MAP.txt must cover v1.0 … v1.37 for both levels"
    assert len(CASES) > 4000


@pytest.mark.parametrize(("level", "version", "outcome", "path"), CASES)
def test_fixture(level: str, version: str, outcome: str, path: Path) -> None:
    obj = load(path)
    parts = pod_spec_of(obj)
    assert parts is not None
    violations = evaluate(*parts, level, version)
    if outcome == "pass":
        assert violations == [], f"{path} must be allowed at {level} {version}"
        return
    check = re.sub(r"\d+$", "", path.stem)
    expected = {check}
    overrider = OVERRIDDEN_BY.get(check)
    minor = int(version.split(".")[1])
    if level == "restricted" and overrider is not None and minor >= overrider[1]:
        expected.add(overrider[0])
    found = {v.check.lower() for v in violations}
    assert found & expected, f"{path} at {level} {version}: expected {expected}, got {violations}"
    known = {c.lower() for c in check_ids(level, version)}
    assert expected & known, f"{check} is not a check at {level} {version}"
