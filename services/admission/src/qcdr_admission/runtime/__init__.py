"""Runtime awareness: the open high-severity findings and chains per image and per namespace,
held in memory from ``analysis:findings`` (:mod:`.state`, :mod:`.reader`)."""
