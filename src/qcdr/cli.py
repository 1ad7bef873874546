"""``qcdr``: the umbrella command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="qcdr",
    help="qcdr: Qualys CDR findings in, valid Tetragon and Cilium policies out.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """qcdr commands."""


def main() -> None:
    app()
