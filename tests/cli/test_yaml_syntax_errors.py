"""A configuration file that fails before its own checks does so in one line that names the file,
worded the same by every loader (qcdr_common.config_files): it cannot be read, it is not UTF-8, or
it is not YAML. A YAML syntax error gives the position and never quotes the offending line: that
line may hold a webhook URL, a token or a Secret."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from qcdr_analysis.correlation.patterns import load_patterns
from qcdr_analysis.tetragon.rules import load_rules as load_tetragon_rules
from qcdr_common.api.auth import ApiAuthSettings, TokenStore
from qcdr_common.config_files import yaml_error_text
from qcdr_ingest.intel.feeds import load_feeds
from qcdr_response.actions.playbook import load_file as load_playbooks
from qcdr_response.outputs.config import load_outputs
from typer.testing import CliRunner

from qcdr.cli import app

SECRET = "hooks-secret-0f3c9a"
# the flow sequence opened on line 2 is never closed: PyYAML fails on line 3 and quotes that line
BROKEN = f"version: 1\nitems: [one, two\nurl: https://hooks.example/{SECRET}\n"


def tokens(path: Path) -> object:
    return TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))


LOADERS: dict[str, Callable[[Path], object]] = {
    "outputs": lambda path: load_outputs(path, environ={}),
    "playbooks": load_playbooks,
    "feeds": load_feeds,
    "patterns": lambda path: load_patterns(path.parent, builtins=False),
    "tetragon rules": load_tetragon_rules,
    "api tokens": tokens,
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_a_syntax_error_is_one_line_with_the_position_and_no_quoted_text(name: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ValueError, match="not valid YAML") as info:  # each loader's own ValueError
        LOADERS[name](path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}: not valid YAML at line 3, column 4" in message
    assert SECRET not in message


@pytest.mark.parametrize("name", list(LOADERS))
@pytest.mark.parametrize(
    "value", ["2024-02-30", "!!float hooks-secret-0f3c9a", "!!timestamp soon", "!!bool maybe", "!!float"]
)
def test_a_value_yaml_cannot_build_is_a_position_without_the_value(
    name: str, value: str, tmp_path: Path
) -> None:
    """PyYAML raised a bare ValueError (AttributeError for '!!timestamp soon') that named no position
    and quoted the value; loaders that catch only YAML errors printed a traceback."""
    path = tmp_path / "config.yaml"
    path.write_text(f"version: 1\nwhen: {value}\n")
    with pytest.raises(ValueError, match=r"not a valid (timestamp|float|bool) value") as info:
        LOADERS[name](path)
    assert f"{path}: not valid YAML at line 2, column 7" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("name", list(LOADERS))
def test_a_file_that_is_not_utf8_is_named_with_the_byte(name: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: not UTF-8 text (byte 9)")):
        LOADERS[name](path)


@pytest.mark.parametrize("name", list(LOADERS))
def test_a_file_that_cannot_be_read_is_named_with_the_reason(name: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()  # root reads any file, so a directory in its place is what cannot be read
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot read: Is a directory")):
        LOADERS[name](path)


def test_qcdr_admission_check_reports_the_position_without_the_text(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(BROKEN)
    result = CliRunner().invoke(app, ["admission", "check", str(manifest)])
    assert result.exit_code == 2
    assert f"{manifest}: not valid YAML at line 3, column 4" in result.stderr
    assert SECRET not in result.output + result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: b: c", "not valid YAML at line 1, column 5: mapping values are not allowed here"),
        (
            "a: [1, 2\nb: 3",
            "not valid YAML at line 2, column 2: expected ',' or ']', but got ':'"
            " (while parsing a flow sequence at line 1)",
        ),
        ("a: 1\nb: *nope", "not valid YAML at line 2, column 4: found undefined alias 'nope'"),
        ("!!python/object:os.system x", "not valid YAML at line 1, column 1: could not determine"),
    ],
)
def test_the_text_names_problem_position_and_context(text: str, expected: str) -> None:
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(text)
    assert yaml_error_text(info.value).startswith(expected)


def test_an_error_without_a_position_still_reads() -> None:
    assert yaml_error_text(yaml.YAMLError("boom")) == "not valid YAML: cannot be parsed"
