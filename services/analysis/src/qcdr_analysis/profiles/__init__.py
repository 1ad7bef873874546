"""Behavioural profiles (per image), drift against the image's baseline, and the profiles API."""
