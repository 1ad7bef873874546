from qcdr_response.cli import cli

cli()
