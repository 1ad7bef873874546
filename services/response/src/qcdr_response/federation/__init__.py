"""Policies placed by a federation hub, arriving from the federation spoke on
``federation:policies`` (``federation.policy_placed`` / ``federation.policy_removed``).

A placed manifest passes the same validator and lint as generated policies, then becomes a policy
of family ``federated`` whose identity is the manifest's (kind, namespace, name): a new version
when its content changes, approved (and applied at once when a cluster is configured) when the hub
enforces it, proposed otherwise. A removal revokes it. What cannot be carried out is announced as
``response.policy_rejected``; every event carries the placement's origin, so the spoke can report
the status of each (policy, generation) back to the hub.
"""
