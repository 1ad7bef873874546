"""Reading the YAML configuration files users write (outputs, playbooks, feeds, patterns, rules,
API tokens), with every failure as one line that names the file.

A file fails in one of three ways before its own checks run: it cannot be read, it is not UTF-8,
or it is not YAML. Each loader used to word these itself; here they are worded once.

PyYAML's own message spans several lines and quotes the offending line with a caret under it.
That breaks the one-line CLI style, and the quoted line may hold a secret (a webhook URL, an API
key), so only PyYAML's problem, its context and the positions are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigFileError(ValueError):
    """One line naming the file and what is wrong with it; loaders re-raise it as their own error."""


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """``not valid YAML at line 2, column 5: <problem> (<context> at line 1)``, lines from 1."""
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    text = f"not valid YAML{where}: {problem}"
    context = getattr(exc, "context", None)
    start = getattr(exc, "context_mark", None)
    # a context on the problem's own line says nothing the position does not
    if context and (start is None or mark is None or start.line != mark.line):
        text += f" ({context} at line {start.line + 1})" if start is not None else f" ({context})"
    return text


def read_config_text(path: Path) -> str:
    """The file's text; :class:`ConfigFileError` when it cannot be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError as exc:  # a ValueError: without this, a message that names no file
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


_POSITIONED: dict[type[yaml.SafeLoader], type[yaml.SafeLoader]] = {}


def positioned(loader: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """``loader`` (SafeLoader, CSafeLoader or a subclass) whose values that cannot be built
    ("2024-02-30", "!!float abc", "!!bool maybe") are YAML errors at the value's position. PyYAML
    raises a bare ValueError (KeyError, AttributeError, IndexError) that names no position and may
    quote the value, which may be a secret."""
    if (found := _POSITIONED.get(loader)) is not None:
        return found

    class Positioned(loader):  # type: ignore[valid-type,misc]  # a class chosen at run time
        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError):  # no YAMLError
                kind = str(node.tag).rsplit(":", 1)[-1]
                raise yaml.constructor.ConstructorError(
                    None, None, f"not a valid {kind} value", node.start_mark
                ) from None

    _POSITIONED[loader] = Positioned
    return Positioned


def parse_yaml(text: str, source: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """``text`` as YAML (safe tags only: ``loader`` must be SafeLoader or a subclass)."""
    try:
        return yaml.load(text, Loader=positioned(loader))  # noqa: S506  # SafeLoader or a subclass
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{source}: {yaml_error_text(exc)}") from None


def load_yaml_file(path: Path, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """The file's YAML document (``None`` when empty); :class:`ConfigFileError` for any of the three
    failures."""
    return parse_yaml(read_config_text(path), str(path), loader)
