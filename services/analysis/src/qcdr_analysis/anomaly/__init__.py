"""Workload anomaly detection: per-workload windows of event counts and resource samples, scored
by univariate tests (z-score, IQR, EWMA) and population models (Isolation Forest, k-means)."""
