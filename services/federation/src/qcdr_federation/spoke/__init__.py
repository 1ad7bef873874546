"""The spoke role: the agent that registers this cluster with its hub, heartbeats, pulls the
policies placed on it (handing them to the local response service through the outbox), reports
their apply status, forwards events and findings, shares baselines and runs the hub users'
commands against the local response API. Everything is pulled: the hub never calls a spoke.
"""
