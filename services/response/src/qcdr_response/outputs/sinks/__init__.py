"""One module per sink type; each registers its class in ``outputs.registry.SINKS``."""
