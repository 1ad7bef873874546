"""Events and findings spokes forward to the hub: deduplicated, events onto the hub's
``ingest:events`` through the outbox, findings kept for the console."""
