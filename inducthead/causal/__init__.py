"""Causal evidence: metrics and data, head ablations and scans, patching, clamps and `verify`."""

from inducthead.causal.ablation import Ablation, AblationResult, ablate, ablation_scan
from inducthead.causal.clamp import Clamp, clamp
from inducthead.causal.metrics import (
    METRICS,
    default_data,
    icl_score,
    loss_by_position,
    no_context_baseline,
)
from inducthead.causal.patching import PatchResult, patch_heads, path_patch
from inducthead.causal.verify import CausalReport, VerifyThresholds, verify

__all__ = [
    "ablate",
    "Ablation",
    "ablation_scan",
    "AblationResult",
    "clamp",
    "Clamp",
    "patch_heads",
    "path_patch",
    "PatchResult",
    "verify",
    "CausalReport",
    "VerifyThresholds",
    "METRICS",
    "default_data",
    "icl_score",
    "loss_by_position",
    "no_context_baseline",
]
