from qcdr_ingest.cli import cli

cli()
