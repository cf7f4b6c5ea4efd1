"""Wang, Yu, E and Wu 2024, "How Transformers Implement Induction Heads: Approximation and
Optimization Analysis" (arXiv 2410.11474; v3 "How Transformers Get Rich: Approximation and
Dynamics Analysis"): the abrupt lazy (4-gram) -> rich (induction head) transition on a mixed
target. No code was released and the full text was not available to us: the target, the
six-scalar model (`model`), the ALiBi-style relative positions, the loss split and every
threshold are PROVISIONAL reconstructions from the abstract and secondary summaries.
`inducthead.detect` does not apply to the six-scalar model (Gaussian vector inputs, no tokens);
`standard` trains a HookedTransformer (preset `wang-standard`) on the token version
(`inducthead.tasks.MixedTargetICL`) and finds its induction head with `detect`."""

from inducthead.papers.wang import data, model, standard, train
from inducthead.papers.wang.experiment import WangResult, reproduce

__all__ = ["reproduce", "WangResult", "data", "model", "standard", "train"]
