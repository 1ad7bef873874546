"""Behavioural baselines (ready profiles by image digest) spokes share through the hub."""
