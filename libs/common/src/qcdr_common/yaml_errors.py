"""One line for a YAML syntax error, in the style of the project's other configuration errors.

PyYAML's own message spans several lines and quotes the offending line with a caret under it.
That breaks the one-line CLI style, and the quoted line may hold a secret (a webhook URL, an API
key), so only PyYAML's problem, its context and the positions are kept.
"""

from __future__ import annotations

import yaml


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
