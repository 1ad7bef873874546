"""Federation: what hub and spokes say to each other, and what a spoke publishes locally (v1)."""
