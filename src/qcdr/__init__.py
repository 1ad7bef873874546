"""qcdr: the umbrella command-line tool."""
