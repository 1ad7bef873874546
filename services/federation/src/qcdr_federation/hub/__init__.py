"""The hub role: spokes, their credentials and health, federated policies, forwarded items,
baselines and commands."""
