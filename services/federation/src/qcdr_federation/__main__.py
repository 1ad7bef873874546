from qcdr_federation.cli import cli

cli()
