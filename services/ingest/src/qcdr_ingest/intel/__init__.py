"""Threat intelligence: feeds, the indicator set, and IP reputation (AbuseIPDB)."""
