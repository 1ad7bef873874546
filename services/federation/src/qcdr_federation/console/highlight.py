"""Syntax highlighting on the server with Pygments (CSS classes only: the CSP forbids inline
styles; ``static/console.css`` colours the classes)."""

from __future__ import annotations

import difflib
import json
from typing import Any

from markupsafe import Markup
from pygments import highlight  # type: ignore[import-untyped]  # no stubs shipped
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
from pygments.lexers import DiffLexer, JsonLexer, YamlLexer  # type: ignore[import-untyped]

_FORMATTER = HtmlFormatter(cssclass="highlight", nowrap=False)
# past this size a page shows plain, escaped text: highlighting a huge document costs more than it helps
MAX_HIGHLIGHT_CHARS = 200_000


def _plain(text: str) -> Markup:
    return Markup('<pre class="code">{}</pre>').format(text)


def json_html(value: Any) -> Markup:
    text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    if len(text) > MAX_HIGHLIGHT_CHARS:
        return _plain(text)
    return Markup(highlight(text, JsonLexer(), _FORMATTER))  # noqa: S704  # Pygments escapes the text


def yaml_html(text: str) -> Markup:
    if len(text) > MAX_HIGHLIGHT_CHARS:
        return _plain(text)
    return Markup(highlight(text, YamlLexer(), _FORMATTER))  # noqa: S704


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_name, tofile=new_name
        )
    )


def diff_html(text: str) -> Markup:
    if len(text) > MAX_HIGHLIGHT_CHARS:
        return _plain(text)
    return Markup(highlight(text, DiffLexer(), _FORMATTER))  # noqa: S704
