"""DNS threat monitoring in ingest: domain names, the domain indicator set and the verdict API."""
