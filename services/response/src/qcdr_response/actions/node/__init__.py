"""Node actions, run by the node agent: stop, pause/unpause, kill process, quarantine, forensics."""
