"""Task generators: deterministic in a seed, vectorised, generated on the model's device."""

from inducthead.tasks.base import Batch, Task, available, from_dict
from inducthead.tasks.bpe_corpus import BPECorpus
from inducthead.tasks.corpus import Corpus
from inducthead.tasks.item_label import ItemLabelICL
from inducthead.tasks.markov import MarkovICL
from inducthead.tasks.mixed_target import MixedTargetICL
from inducthead.tasks.ngram import NGramMarkovICL
from inducthead.tasks.repeated_tokens import RepeatedTokens

__all__ = [
    "Batch",
    "Task",
    "RepeatedTokens",
    "Corpus",
    "BPECorpus",
    "MarkovICL",
    "NGramMarkovICL",
    "ItemLabelICL",
    "MixedTargetICL",
    "from_dict",
    "available",
]
