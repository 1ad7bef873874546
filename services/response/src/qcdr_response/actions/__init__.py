"""Response actions: one module per action in a registry (cluster, node and policy actions),
playbooks that choose them for findings, and the service that records, approves, executes,
leases and undoes them."""
