"""Outputs: findings delivered to Slack, PagerDuty, Teams, Splunk HEC, Elasticsearch, syslog and
webhooks, durably (an outbox queue per sink, retries with backoff, dead letters, grouping)."""
