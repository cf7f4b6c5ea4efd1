"""The transformer: its config, layers, attention kernels, hand-built circuits and interop.

`HookedTransformer` follows TransformerLens 3's module, parameter and hook names, so
`run_with_cache`, `run_with_hooks`, TL's patching tools and ARENA-style code run on it.
"""

from inducthead.model.config import HookedTransformerConfig, resolve_config
from inducthead.model.handbuilt import HeadRoles, induction_circuit
from inducthead.model.hooked import HookedTransformer
from inducthead.model.interop import from_hf_gpt2, to_bridge
from inducthead.model.loss import masked_loss, next_token_loss, token_nll

__all__ = [
    "HookedTransformerConfig",
    "HookedTransformer",
    "resolve_config",
    "to_bridge",
    "from_hf_gpt2",
    "induction_circuit",
    "HeadRoles",
    "token_nll",
    "next_token_loss",
    "masked_loss",
]
