"""Shared pieces every qcdr service builds on: settings, contracts, registry, logging, health."""
