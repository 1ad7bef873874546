"""Spoke clusters on the hub: declaration, bootstrap tokens, registration, credentials,
heartbeats and health."""
