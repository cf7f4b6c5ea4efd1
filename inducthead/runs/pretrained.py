"""`load_pretrained`: TransformerLens 4 bridges for local or hub models, offline-aware."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path

import torch

from inducthead.runs.run import load

_LOCAL_MODEL_FILES = ("config.json",)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


class PretrainedLoadError(RuntimeError):
    """A pretrained model could not be loaded; the message says why and what to do."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def check_tokenizer(tokenizer, source: str) -> None:
    """Raise if `tokenizer` has no vocabulary beyond its special tokens: offline,
    `GPT2TokenizerFast.from_pretrained("gpt2")` returns such a tokenizer instead of failing
    (it then holds just <|endoftext|>), and every id it produces is wrong."""
    if tokenizer is None:
        return
    try:
        size = len(tokenizer.get_vocab())
    except Exception:  # noqa: BLE001 - tokenizers without get_vocab: trust len()
        size = len(tokenizer)
    specials = len(set(getattr(tokenizer, "all_special_ids", []) or []))
    if size <= specials:
        raise PretrainedLoadError(
            f"the tokenizer loaded for {source!r} is empty (no vocabulary). This is what "
            "transformers returns offline when the tokenizer files are not cached. Save the "
            "tokenizer next to the model (tokenizer.json, or vocab.json + merges.txt) or pass "
            "tokenizer=AutoTokenizer.from_pretrained(<a directory that has them>)."
        )


def load_pretrained(
    name_or_path: str | os.PathLike,
    checkpoint: int | None = None,
    device: str | torch.device | None = None,
    *,
    checkpoint_value: int | None = None,
    tokenizer=None,
    dtype: torch.dtype = torch.float32,
):
    """A TransformerLens 4 `TransformerBridge` for a pretrained model, ready for `detect`.

    - a local Hugging Face directory (has config.json) boots offline through
      `TransformerBridge.boot_transformers`;
    - an inducthead run directory or checkpoint file loads our own model (`inducthead.load`);
    - a legacy TransformerLens repo (NeelNanda/..., ArthurConmy/..., Baidicoot/...) boots through
      `TransformerBridge.boot_tl_legacy`;
    - any other name boots from the Hugging Face Hub when the network (or the HF cache) has it.
    `checkpoint` / `checkpoint_value` select a training checkpoint (Pythia-style
    `checkpoint_index` / `checkpoint_value`, passed through to TransformerLens).
    """
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.exists():
        if (path / "run.json").is_file() or path.suffix == ".safetensors":
            return load(path, step=checkpoint, device=str(device) if device else None)
        if not any((path / f).is_file() for f in _LOCAL_MODEL_FILES):
            raise PretrainedLoadError(
                f"{path} exists but holds no config.json: not a Hugging Face model directory "
                "(save one with model.save_pretrained(dir)) nor an inducthead run directory."
            )
        source = str(path)
    else:
        source = str(name_or_path)
    ckpt = {"checkpoint_index": checkpoint, "checkpoint_value": checkpoint_value}
    check_tokenizer(tokenizer, source)
    try:
        with _cache_only_if_unreachable(local=path.exists()):
            bridge = _boot(source, path, device, dtype, tokenizer, ckpt)
    except PretrainedLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - HF raises many types for "not available"
        if path.exists():
            raise PretrainedLoadError(f"could not boot the local model {path}: {e}") from e
        reason = (
            "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face Hub could not be reached"
        )
        raise PretrainedLoadError(
            f"could not load {source!r}: it is not a local directory, {reason} or it does not "
            f"have this model, and it is not in the local cache ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Download it where there is network "
            "(e.g. `huggingface-cli download NAME --local-dir DIR`) and pass the directory."
        ) from e
    if path.exists() and tokenizer is None and not _has_tokenizer_files(path):
        _drop_empty_tokenizer(bridge, path)
    check_tokenizer(getattr(bridge, "tokenizer", None), source)
    bridge.eval()
    bridge.loaded_from = {"path": source, "step": checkpoint_value or checkpoint}
    return bridge


def _has_tokenizer_files(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def _drop_empty_tokenizer(bridge, path: Path) -> None:
    """A local model saved without a tokenizer gets the empty stand-in transformers makes
    offline; our analyses need token ids only, so go on without it (and say so)."""
    try:
        check_tokenizer(getattr(bridge, "tokenizer", None), str(path))
    except PretrainedLoadError:
        bridge.tokenizer = None
        warnings.warn(
            f"{path} has no tokenizer files: loaded without a tokenizer. detect and verify "
            "probe with token ids (and no BOS); pass tokenizer= for text-based tools.",
            stacklevel=3,
        )


def _boot(source: str, path: Path, device, dtype, tokenizer, ckpt: dict):
    from transformer_lens import TransformerBridge
    from transformer_lens.model_bridge.sources.tl_legacy import TL_LEGACY_PREFIXES

    if not path.exists() and source.startswith(TL_LEGACY_PREFIXES):
        return TransformerBridge.boot_tl_legacy(
            source, device=device, dtype=dtype, tokenizer=tokenizer, **ckpt
        )
    extra = {k: v for k, v in ckpt.items() if v is not None}
    return TransformerBridge.boot_transformers(
        source, device=device, dtype=dtype, tokenizer=tokenizer, **extra
    )


@contextlib.contextmanager
def _cache_only_if_unreachable(local: bool):
    """Without a route to the Hub, read only the local cache: huggingface_hub would otherwise
    retry for ~25 s before failing."""
    import huggingface_hub.constants as hub

    if local or _offline() or _hub_reachable():
        yield
        return
    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
