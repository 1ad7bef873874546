"""Node actions and the node agent, against a real dockerd."""
