"""Finding heads: model adapters, head names, per-head scores, `detect` and its report."""

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.composition import composition_scores
from inducthead.analysis.copying import copying_score, empirical_copying_score
from inducthead.analysis.detect import detect, detect_heads
from inducthead.analysis.detection import DetectionReport, DetectionResult, Thresholds
from inducthead.analysis.emergence import emergence_step
from inducthead.analysis.heads import Head, all_heads, check_heads, head_label, parse_heads
from inducthead.analysis.results import Result
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
    "detect_heads",
    "DetectionResult",
    "DetectionReport",
    "Result",
    "all_heads",
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
