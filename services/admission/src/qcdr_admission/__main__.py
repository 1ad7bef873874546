from qcdr_admission.cli import cli

cli()
