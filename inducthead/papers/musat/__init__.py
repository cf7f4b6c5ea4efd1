"""Musat et al. 2025, "On the Emergence of Induction Heads for In-Context Learning"
(arXiv 2511.01033): the minimal induction-head model, its 19-dimensional subspace, the three
coordinates that grow, and emergence time against context length.

PROVISIONAL: the paper's full text was not available to us (searches found the abstract and
secondary notes that quote its assumptions, theorem and progress measures). What comes from the
abstract: the 19-dimensional subspace (proved), 3 dimensions accounting for emergence, the
quadratic bound. What comes from secondary notes (provisional): the disentangled architecture
with merged W1 (2D x 2D), W2 (4D x 4D), readout W3; zero init, population MSE, gradient flow,
isotropic inputs, query last; alpha in R^3, beta in R^12, gamma in R^4, W1 = diag(alpha1 I,
alpha2 I + alpha3 M); the order T_gamma = Theta(N) < T_beta, T_alpha = Theta(N^2); the standard
model's progress measures. Our reconstruction (provisional, documented in each module): the
positional code (labels at M times their item's position, M a complex structure), the symmetry
group that yields exactly 19, the numbering of the coordinates other than alpha3, beta2, gamma3,
and both definitions of emergence time.
"""

from inducthead.papers.musat import data, emergence, flow, gram, subspace
from inducthead.papers.musat.experiment import MusatResult, reproduce
from inducthead.papers.musat.model import MinimalInductionModel, forward_weights

__all__ = [
    "reproduce",
    "MusatResult",
    "MinimalInductionModel",
    "forward_weights",
    "data",
    "emergence",
    "flow",
    "gram",
    "subspace",
]
