"""A CRI runtime (containerd, CRI-O) as a node's container runtime."""
