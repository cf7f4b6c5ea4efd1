"""Pictures: interactive circuitsvis views that work offline (`html`, `attention`, `tokens`)."""

from inducthead.viz.attention import AttentionView, attention, induction_stripes
from inducthead.viz.html import OFFLINE_CSP, View, bundle_script, page
from inducthead.viz.tokens import LossChangeView, loss_change_tokens

__all__ = [
    "View",
    "page",
    "bundle_script",
    "OFFLINE_CSP",
    "AttentionView",
    "attention",
    "induction_stripes",
    "LossChangeView",
    "loss_change_tokens",
]
