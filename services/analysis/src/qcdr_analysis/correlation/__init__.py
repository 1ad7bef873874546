"""Attack-chain correlation: declarative patterns (``patterns/*.yaml``) matched in order, per join
key and time window, over events and the findings other detectors raised on them.

Use::

    engine = Engine(load_patterns(user_dir))          # once, at start
    engine.restore(snapshot)                          # if a checkpoint exists
    chains = engine.feed(batch_events, batch_findings)  # per micro-batch
    checkpoint(engine.snapshot())                     # with the batch's stream offsets
"""

from qcdr_analysis.correlation.engine import Engine, Stats
from qcdr_analysis.correlation.patterns import JoinKey, Match, Pattern, PatternError, Step, load_patterns

__all__ = ["Engine", "JoinKey", "Match", "Pattern", "PatternError", "Stats", "Step", "load_patterns"]
