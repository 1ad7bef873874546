from qcdr.cli import main

main()
