"""DNS monitoring: registered-domain extraction, a lexical DGA classifier and per-pod aggregation."""

from qcdr_analysis.dns.classifier import Verdict, classify, load_classifier
from qcdr_analysis.dns.domains import registered
from qcdr_analysis.dns.tracker import PodDgaTracker, Query, TrackerConfig

__all__ = ["PodDgaTracker", "Query", "TrackerConfig", "Verdict", "classify", "load_classifier", "registered"]
