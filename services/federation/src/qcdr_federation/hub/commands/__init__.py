"""Commands hub users send spokes (approve, reject, undo, renew one of their response actions)."""
