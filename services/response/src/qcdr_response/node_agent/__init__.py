"""The node agent: the response package run as a DaemonSet (``qcdr-response node-agent``). It
consumes its node's ``response:node-actions:<node>`` stream, carries out node actions (stop,
pause/unpause, kill, quarantine, forensics) against the local Docker Engine and ``/proc``, and
publishes each result on ``response:action-results``."""
