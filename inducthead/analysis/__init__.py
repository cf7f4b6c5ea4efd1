"""Finding heads: model adapters, head names, per-head scores, `detect` and its report."""

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.composition import composition_scores
from inducthead.analysis.copying import copying_score, empirical_copying_score
from inducthead.analysis.detect import detect
from inducthead.analysis.emergence import emergence_step
from inducthead.analysis.heads import Head, check_heads, head_label, parse_heads
from inducthead.analysis.report import DetectionReport, Thresholds
from inducthead.analysis.scores import (
    duplicate_token_score,
    induction_score,
    prefix_matching_score,
    previous_token_score,
)

__all__ = [
    "ModelAdapter",
    "Head",
    "head_label",
    "parse_heads",
    "check_heads",
    "detect",
    "DetectionReport",
    "Thresholds",
    "emergence_step",
    "prefix_matching_score",
    "previous_token_score",
    "duplicate_token_score",
    "induction_score",
    "copying_score",
    "empirical_copying_score",
    "composition_scores",
]
