from qcdr_analysis.cli import cli

cli()
