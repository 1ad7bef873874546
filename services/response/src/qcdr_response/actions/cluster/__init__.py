"""Cluster actions (lightkube): isolate, label, annotate, delete pod, evict, scale to zero, cordon."""
