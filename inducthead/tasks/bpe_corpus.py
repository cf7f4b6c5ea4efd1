"""Language modelling on text files with a small byte-level BPE vocabulary trained locally
(`tokenizers`): Olsson et al. 2022's setting at a CPU scale. One file is one document; documents
are joined by a separator token that doubles as BOS (id `vocab_size`, so `d_vocab` is
`vocab_size + 1`). Every 30th document (by `val_every`) is held out for `eval_batch`.

The default documents are the running interpreter's standard-library sources without their
test folders (~35% code in Olsson's data; offline); `paths` takes any files or folders, and
`dataset` a Hugging Face dataset name when online (`"wikitext:wikitext-103-raw-v1"`: name and
config; the first `max_documents` rows of `dataset_split`, one row's `text_field` a document;
`pip install datasets`). The tokenizer and the encoded token stream
are cached under `cache_dir` (default `~/.cache/inducthead/bpe`), keyed by the documents'
SHA-256 fingerprint and the vocabulary settings, and written atomically: a second use loads in
milliseconds, and a changed file means a new key, never a stale stream.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inducthead.tasks.base import Batch, Task, generator
from inducthead.tasks.corpus import resolve_paths, stdlib_files

TEST_DIRS = {"test", "tests", "idle_test", "unittest"}


def stdlib_documents() -> list[Path]:
    """The standard library's .py files outside test folders."""
    return [f for f in stdlib_files() if not TEST_DIRS & set(f.parts)]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class BPECorpus(Task):
    """Random windows of `seq_len` tokens from text documents under a byte-level BPE of
    `vocab_size` tokens (trained on up to `tokenizer_docs` documents) plus the separator/BOS."""

    name = "bpe_corpus"
    paths: tuple[str, ...] = ()
    seq_len: int = 256
    vocab_size: int = 512
    tokenizer_docs: int = 3000
    val_every: int = 30
    cache_dir: str | None = None
    dataset: str | None = None
    dataset_split: str = "train"
    text_field: str = "text"
    max_documents: int = 20000
    _streams: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _info: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_device: dict[str, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.paths = tuple(str(p) for p in self.paths)
        for name, low in (("seq_len", 1), ("vocab_size", 257), ("tokenizer_docs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"BPECorpus.{name} must be an int >= {low}, got {v!r}.")
        if isinstance(self.val_every, bool) or not isinstance(self.val_every, int):
            raise ValueError(f"BPECorpus.val_every must be an int >= 2, got {self.val_every!r}.")
        if self.val_every < 2:
            raise ValueError(f"BPECorpus.val_every must be an int >= 2, got {self.val_every!r}.")
        if self.vocab_size > 65535:
            raise ValueError("BPECorpus.vocab_size must be <= 65535 (tokens are stored as uint16).")
        if self.dataset is not None and self.paths:
            raise ValueError("BPECorpus: give paths or a dataset, not both.")
        if isinstance(self.max_documents, bool) or not isinstance(self.max_documents, int):
            raise ValueError(
                f"BPECorpus.max_documents must be an int >= 2, got {self.max_documents!r}."
            )
        if self.max_documents < 2:
            raise ValueError(
                f"BPECorpus.max_documents must be an int >= 2, got {self.max_documents!r}."
            )

    @property
    def d_vocab(self) -> int:
        return self.vocab_size + 1

    @property
    def bos_token_id(self) -> int:
        return self.vocab_size

    # ------------------------------------------------------------------ building
    def documents(self) -> list[Path]:
        """The document files (`paths`, or the standard library); [] for a `dataset`."""
        if self.dataset is not None:
            return []
        return resolve_paths(self.paths) if self.paths else stdlib_documents()

    def _texts(self) -> list[tuple[str, bytes]]:
        """`(name, raw bytes)` of every document, files or dataset rows."""
        if self.dataset is None:
            return [(f.name, f.read_bytes()) for f in self.documents()]
        rows = _dataset_rows(self.dataset, self.dataset_split, self.max_documents)
        texts = []
        for i, row in enumerate(rows):
            if self.text_field not in row:
                raise ValueError(
                    f"BPECorpus: dataset {self.dataset!r} has no field {self.text_field!r} "
                    f"(fields: {', '.join(row)}); set text_field."
                )
            if row[self.text_field]:
                texts.append((f"{self.dataset}[{i}]", str(row[self.text_field]).encode()))
        return texts

    def _key(self, docs: list[tuple[str, bytes]]) -> str:
        digest = hashlib.sha256()
        for name, raw in docs:
            digest.update(name.encode() + b"\0" + raw)
        spec = f"{self.vocab_size}:{self.tokenizer_docs}:{self.val_every}".encode()
        digest.update(b"\1" + spec)
        return digest.hexdigest()

    def _build(self) -> None:
        if self._streams:
            return
        docs = self._texts()
        if len(docs) < 2:
            raise ValueError(
                f"BPECorpus: {len(docs)} document(s); need at least 2 (one is held out)."
            )
        key, texts = self._key(docs), [raw for _, raw in docs]
        root = Path(self.cache_dir or Path.home() / ".cache" / "inducthead" / "bpe") / key[:24]
        paths = {s: root / f"{s}.npy" for s in ("train", "val")}
        tok_path = root / "tokenizer.json"
        if not (tok_path.exists() and all(p.exists() for p in paths.values())):
            self._encode(texts, tok_path, paths)
        self._streams = {s: np.load(p, mmap_mode="r") for s, p in paths.items()}
        self._info = {
            "n_documents": len(docs),
            "fingerprint": key,
            "n_tokens": {s: int(len(v)) for s, v in self._streams.items()},
            "tokenizer": str(tok_path),
        }
        for split, stream in self._streams.items():
            if len(stream) < self.seq_len + 1:
                raise ValueError(
                    f"BPECorpus: the {split} stream has {len(stream)} tokens, fewer than one "
                    f"window of {self.seq_len + 1}; add documents or lower seq_len."
                )

    def _encode(self, texts: list[bytes], tok_path: Path, paths: dict[str, Path]) -> None:
        from tokenizers import ByteLevelBPETokenizer

        docs = [t.decode("utf-8", errors="replace") for t in texts]
        step = max(len(docs) // self.tokenizer_docs, 1)  # an even spread of the documents
        tokenizer = ByteLevelBPETokenizer()
        tokenizer.train_from_iterator(
            docs[::step][: self.tokenizer_docs],
            vocab_size=self.vocab_size,
            min_frequency=2,
            show_progress=False,
            special_tokens=[],
        )
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise RuntimeError("BPECorpus: the trained vocabulary exceeds vocab_size.")
        sep = np.array([self.vocab_size], dtype=np.uint16)
        encoded = [np.array(e.ids, dtype=np.uint16) for e in tokenizer.encode_batch(docs)]
        for split, held_out in (("train", False), ("val", True)):
            chosen = [d for i, d in enumerate(encoded) if (i % self.val_every == 0) == held_out]
            flat = np.concatenate([part for d in chosen for part in (sep, d)])
            _atomic_write(paths[split], _npy_bytes(flat))
        _atomic_write(tok_path, tokenizer.to_str().encode())  # last: it marks the cache complete

    def describe(self) -> dict[str, Any]:
        """Documents, token counts, fingerprint and tokenizer file (stored in run.json)."""
        self._build()
        return dict(self._info)

    def tokenizer(self):
        """The trained `tokenizers.Tokenizer` (decode ids to text; the separator is not in it)."""
        from tokenizers import Tokenizer

        self._build()
        return Tokenizer.from_file(self._info["tokenizer"])

    # ------------------------------------------------------------------ sampling
    def _on(self, split: str, device) -> torch.Tensor:
        key = f"{split}:{device}"
        if key not in self._by_device:
            self._build()
            array = np.asarray(self._streams[split], dtype=np.int64)
            self._by_device[key] = torch.from_numpy(array).to(device)
        return self._by_device[key]

    def _windows(self, split: str, batch_size: int, seed: int, device) -> Batch:
        data = self._on(split, device)
        n = self.seq_len + 1
        g = generator(seed, device)
        starts = (torch.rand(batch_size, generator=g, device=device) * (len(data) - n + 1)).long()
        window = data[starts[:, None] + torch.arange(n, device=device)]
        tokens, targets = window[:, :-1], window[:, 1:]
        return Batch(tokens, targets, torch.ones_like(tokens, dtype=torch.bool))

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        return self._windows("train", batch_size, seed, device)

    def eval_batch(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        return self._windows("val", batch_size, seed + 10**9, device)


def _dataset_rows(name: str, split: str, limit: int) -> list[dict]:
    """The first `limit` rows of the Hugging Face dataset `name` ("name" or "name:config"),
    streamed (only those rows are downloaded)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"BPECorpus(dataset={name!r}) needs the datasets package: pip install datasets "
            "(or pass paths= to text files)."
        ) from None
    path, _, config = name.partition(":")
    stream = datasets.load_dataset(path, config or None, split=split, streaming=True)
    rows = []
    for row in stream:
        rows.append(dict(row))
        if len(rows) >= limit:
            break
    return rows


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
