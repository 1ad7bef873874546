"""The policy lifecycle: findings in, policy versions and their status out.

Findings arrive on ``analysis:findings``; each is stored, routed to a generator family and linked
to exactly one version of the policy that covers it. A policy moves
``proposed → approved → applied → revoked`` through the REST API (or automatically with
``auto_apply``); every change leaves through the outbox on ``response:events``.
"""
