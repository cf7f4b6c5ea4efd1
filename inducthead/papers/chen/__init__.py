"""Chen, Sheen, Wang and Yang 2024, "Unveiling Induction Heads: Provable Training Dynamics and
Feature Learning in Transformers" (NeurIPS 2024, arXiv 2409.10559): the generalized induction
head on n-gram Markov chains.

The model (`GIHModel`), its data (`inducthead.tasks.NGramMarkovICL`), full-batch SGD staged or
joint (`train`), the interop with the authors' state dicts (`reference`), and `reproduce`.
Facts read in the authors' code and result files (gszfwsb/Unveiling-Induction-Heads at
9a620e4): the parameterisation, subset order, initial values, learning rates and final values.
PROVISIONAL (ours): the loss is the true NLL (the authors' scripts apply a cross-entropy to the
model's probabilities as if they were logits; that quantity is reported beside it); the quick
mode's sizes; the staged W learning rate (`experiment.W_STAGE_LR`); the thresholds in `claims`.

`inducthead.detect` does not apply: layer 2 reads only the appended query slot (no per-position
induction pattern to score), layer 1 and layer 2 have different head counts, and the output is
a mix of the input one-hots rather than logits through an unembedding. Hook-based ablation and
patching do apply (`experiment.head_ablation` zeroes a layer-1 head through
`blocks.0.ln.hook_normalized`).
"""

from inducthead.papers.chen.experiment import ChenResult, head_ablation, reproduce
from inducthead.papers.chen.model import GIHModel, subset_codes, subset_degrees
from inducthead.papers.chen.reference import (
    from_reference_state_dict,
    reference_forward,
    to_reference_state_dict,
)
from inducthead.papers.chen.train import Stage, fit, own_lag_attention

__all__ = [
    "reproduce",
    "ChenResult",
    "GIHModel",
    "Stage",
    "fit",
    "own_lag_attention",
    "head_ablation",
    "from_reference_state_dict",
    "to_reference_state_dict",
    "reference_forward",
    "subset_codes",
    "subset_degrees",
]
