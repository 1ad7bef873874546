"""The hub's controller of federation objects (FederatedCluster, FederatedTracingPolicy,
FederatedNetworkPolicy): lightkube list + watch, reconciled through the hub's own services,
status written back. Enabled by ``QCDR_FEDERATION_CONTROLLER`` (``lifespan.install_controller``)."""
