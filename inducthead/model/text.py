"""Text in and out of `HookedTransformer`: TransformerLens 3's tokenizer methods (`set_tokenizer`,
`to_tokens`, `to_string`, `to_str_tokens`, `to_single_token`, `to_single_str_token`,
`get_token_position`, `input_to_embed`) and text input to `forward`, `run_with_cache` and
`run_with_hooks`; `generate` comes from `inducthead.model.generate`.

TL 3's semantics, with these differences:

- `set_tokenizer` keeps the tokenizer it is given. TL 3 reloads it from its `name_or_path` with
  `add_bos_token=True` (a hub or disk access, and a different object from the one passed); we
  insert the BOS id ourselves when the tokenizer does not, which gives the same ids.
  `cfg.tokenizer_prepends_bos` is read off `encode("a")` of the tokenizer given (TL 4's test:
  TL 3's `encode("")` takes a tokenizer that appends EOS for one that prepends BOS), so it is
  False for a tokenizer that adds no BOS, where TL 3 records True for its reloaded one.
- Truncation (`truncate=True`) keeps `n_ctx` tokens after BOS handling. TL 3 truncates what its
  reloaded tokenizer gives, BOS included, and only then removes a BOS it was asked not to
  prepend: with `prepend_bos=False` its long texts come out `n_ctx - 1` tokens long.
- Padding is ours (after BOS handling), so for text input we know exactly which positions are
  padding: a left-padded batch gets that mask, where TL 3 re-derives it from the pad id
  (`padding_mask`, its `get_attention_mask` rule), which differs only where a real token at the
  edge equals the pad token. Token tensors get TL 3's rule.
- Errors are ValueError / TypeError / RuntimeError naming the fix, not bare assertions.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from inducthead.model.generate import GenerateMixin

PADDING_SIDES = ("left", "right")


def padding_mask(
    tokens: Tensor,
    pad_token_id: int,
    bos_token_id: int | None,
    prepend_bos: bool,
    padding_side: str,
) -> Tensor:
    """TransformerLens 3's `utils.get_attention_mask` rule, `[batch, pos]` long (1 = token): with
    right padding the trailing run of pad ids is padding; with left padding the leading run,
    except that when BOS is the pad token and a BOS was prepended, the last id of that run is the
    BOS and is kept."""
    real = tokens.ne(pad_token_id)
    if padding_side == "right":
        pad = real.flip(-1).cumsum(-1).flip(-1) == 0
    else:
        pad = real.cumsum(-1) == 0
    mask = (~pad).long()
    if padding_side == "left" and prepend_bos and bos_token_id == pad_token_id:
        rows = pad.any(-1).nonzero().squeeze(-1)
        mask[rows, pad[rows].sum(-1) - 1] = 1
    return mask


def _prepends_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a BOS-like token (BOS, or CLS) before the text itself."""
    ids = tokenizer.encode("a")
    leading = {tokenizer.bos_token_id, getattr(tokenizer, "cls_token_id", None)} - {None}
    return len(ids) > 1 and ids[0] in leading


def load_named_tokenizer(name: str):
    """`transformers.AutoTokenizer.from_pretrained(name)` (a hub name or a local directory), for
    a config's `tokenizer_name` as TL 3 loads it; where it cannot be loaded (offline, a typo) a
    one-line warning says so and None is returned: the model works on token ids without one."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, missing files: all say so
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        warnings.warn(
            f"cfg.tokenizer_name {name!r}: could not load that tokenizer ({first}); the model "
            "has none (token ids work; call model.set_tokenizer(tok) for text).",
            stacklevel=3,
        )
        return None


class TextMethods(GenerateMixin):
    """Mixed into `HookedTransformer` (which provides `cfg`, `tokenizer`, `device`,
    `validate_tokens`, `_check_mask` and `embed_tokens`)."""

    # ------------------------------------------------------------------ the tokenizer
    def set_tokenizer(self, tokenizer, default_padding_side: str | None = None) -> None:
        """Use a Hugging Face tokenizer (`PreTrainedTokenizerBase`) for text, as TL 3 does: the
        padding side becomes `default_padding_side` when given (else the tokenizer's own, else
        "right"); a missing pad token becomes the EOS token (else BOS), a missing BOS the EOS;
        `cfg.tokenizer_prepends_bos` records whether the tokenizer adds BOS itself. Refuses a
        tokenizer with more ids than the model's `d_vocab` (TL 3 infers d_vocab from it)."""
        from transformers import PreTrainedTokenizerBase

        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                "set_tokenizer expects a Hugging Face tokenizer (PreTrainedTokenizerBase, e.g. "
                f"AutoTokenizer.from_pretrained(dir)), got {type(tokenizer).__name__}."
            )
        if default_padding_side not in (None, *PADDING_SIDES):
            raise ValueError(
                f"default_padding_side must be 'left', 'right' or None, got "
                f"{default_padding_side!r}."
            )
        vocab = tokenizer.get_vocab()
        n_ids = max(vocab.values()) + 1 if vocab else len(tokenizer)
        if n_ids > self.cfg.d_vocab:
            raise ValueError(
                f"the tokenizer has {n_ids} token ids but the model only d_vocab="
                f"{self.cfg.d_vocab}: its embedding has no row for ids >= {self.cfg.d_vocab}. "
                "Use a tokenizer whose vocabulary fits the model (or a model built with "
                f"d_vocab >= {n_ids})."
            )
        if default_padding_side is not None:
            tokenizer.padding_side = default_padding_side
        if tokenizer.padding_side is None:
            tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token
        if tokenizer.bos_token is None and tokenizer.eos_token is not None:
            tokenizer.bos_token = tokenizer.eos_token
        bos = self.cfg.bos_token_id
        if bos is not None and tokenizer.bos_token_id is not None and bos != tokenizer.bos_token_id:
            warnings.warn(
                f"the model's cfg.bos_token_id is {bos} but the tokenizer's BOS is id "
                f"{tokenizer.bos_token_id}: text will start with {tokenizer.bos_token_id}.",
                stacklevel=2,
            )
        self.tokenizer = tokenizer
        self.cfg.tokenizer_prepends_bos = _prepends_bos(tokenizer)

    def _require_tokenizer(self, what: str, error: type[Exception] = RuntimeError):
        if self.tokenizer is None:
            raise error(
                f"{what} needs a tokenizer and this model has none: call "
                "model.set_tokenizer(tokenizer) first (e.g. with "
                "transformers.AutoTokenizer.from_pretrained(<dir>)), or pass token ids "
                "(a torch.Tensor [batch, pos])."
            )
        return self.tokenizer

    def _text_defaults(self, prepend_bos, padding_side) -> tuple[bool, str]:
        """`prepend_bos` and `padding_side` with None resolved to the defaults (TL 3's
        `cfg.default_prepend_bos` and `tokenizer.padding_side`)."""
        if prepend_bos is None:
            prepend_bos = self.cfg.default_prepend_bos
        elif not isinstance(prepend_bos, bool):
            raise ValueError(f"prepend_bos must be True, False or None, got {prepend_bos!r}.")
        if padding_side is None:
            padding_side = self.tokenizer.padding_side if self.tokenizer is not None else "right"
        elif padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}.")
        return prepend_bos, padding_side

    # ------------------------------------------------------------------ text -> tokens
    def _tokenize(
        self, input, prepend_bos, padding_side, truncate: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Token ids `[batch, pos]` (on the CPU) and their padding mask (1 = token)."""
        tok = self._require_tokenizer("text input")
        prepend_bos, padding_side = self._text_defaults(prepend_bos, padding_side)
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("text input must be a string or a non-empty list of strings.")
        leading = {tok.bos_token_id, getattr(tok, "cls_token_id", None)} - {None}
        adds_bos = self.cfg.tokenizer_prepends_bos
        if adds_bos is None:  # `model.tokenizer = tok` assigned directly, as TL 3 allows
            adds_bos = _prepends_bos(tok)
        rows = []
        for row in tok(texts)["input_ids"]:
            row = list(row)
            if adds_bos and not prepend_bos and row and row[0] in leading:
                row = row[1:]  # the tokenizer added a BOS we were asked not to prepend
            elif prepend_bos and not adds_bos and tok.bos_token_id is not None:
                row = [tok.bos_token_id, *row]
            rows.append(row[: self.cfg.n_ctx] if truncate else row)
        width = max(len(row) for row in rows)
        if tok.pad_token_id is None and any(len(row) < width for row in rows):
            raise ValueError(
                "these strings have different lengths and the tokenizer has no pad token (nor "
                "EOS/BOS to pad with): set tokenizer.pad_token."
            )
        tokens = torch.full((len(rows), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            at = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            tokens[i, at] = torch.tensor(row, dtype=torch.long)
            mask[i, at] = 1
        return tokens, mask

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Tensor:
        """Text to token ids `[batch, pos]` (batch 1 for a string), as TL 3: BOS prepended when
        `prepend_bos` (default `cfg.default_prepend_bos`), shorter strings padded with the pad id
        on `padding_side` (default `tokenizer.padding_side`), cut to `n_ctx` when `truncate`
        (TL 3: `n_ctx - 1` with prepend_bos=False, see the module docstring). Pass
        `prepend_bos=False` for a fragment of a longer prompt."""
        tokens, _ = self._tokenize(input, prepend_bos, padding_side, truncate)
        return tokens.to(self.device) if move_to_device else tokens

    def input_to_embed(
        self, input, prepend_bos=None, padding_side=None, attention_mask=None, past_kv_cache=None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """TL 3's: `(residual entering block 0, tokens, shortformer_pos_embed, attention_mask)`
        for text or token ids. The mask is the one given; else, with a tokenizer that pads on the
        left (`padding_side`), the padding of left-padded text, or TL 3's rule for token ids
        (`padding_mask`); else None, as in TL 3 (right padding needs none for the logits, but
        then the loss counts the padding, as in TL 3)."""
        if past_kv_cache is not None:
            raise NotImplementedError("past_kv_cache: this model has no key-value cache.")
        tokens, attention_mask = self._input_tokens(
            input, prepend_bos, padding_side, attention_mask
        )
        resid, shortformer_pos_embed = self.embed_tokens(tokens, attention_mask)
        return resid, tokens, shortformer_pos_embed, attention_mask

    def _input_tokens(self, input, prepend_bos, padding_side, attention_mask):
        is_text = isinstance(input, str) or (
            isinstance(input, (list, tuple)) and len(input) > 0 and isinstance(input[0], str)
        )
        if is_text:
            self._require_tokenizer("text input", TypeError)
            tokens, mask = self._tokenize(input, prepend_bos, padding_side)
            tokens = self.validate_tokens(tokens.to(self.device))
            side = self._text_defaults(prepend_bos, padding_side)[1]
            if attention_mask is None and side == "left":
                attention_mask = mask
        else:
            if isinstance(input, (list, tuple)):
                raise TypeError(
                    "input must be a torch.Tensor of token ids [batch, pos], or text (a string "
                    f"or a list of strings); got a {type(input).__name__} of "
                    f"{type(input[0]).__name__ if input else 'nothing'}."
                )
            tokens = self.validate_tokens(input)
            prepend_bos, side = self._text_defaults(prepend_bos, padding_side)
            tok = self.tokenizer
            if attention_mask is None and tok is not None and side == "left":
                attention_mask = padding_mask(
                    tokens, tok.pad_token_id, tok.bos_token_id, prepend_bos, side
                )
        if attention_mask is not None:
            attention_mask = self._check_mask(attention_mask, tokens)
        return tokens, attention_mask

    # ------------------------------------------------------------------ tokens -> text
    def to_string(self, tokens) -> str | list[str]:
        """Token ids to text: a string for `[pos]` (or one id), a list of strings for
        `[batch, pos]`; lists, numpy arrays and lists of 1-D tensors are accepted (TL 3)."""
        tok = self._require_tokenizer("to_string")
        if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], Tensor):
            tokens = torch.stack(list(tokens))
        tokens = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, Tensor) else tokens)
        if tokens.ndim == 2:
            return tok.batch_decode(tokens.tolist(), clean_up_tokenization_spaces=False)
        if tokens.ndim <= 1:
            return tok.decode(tokens.reshape(-1).tolist(), clean_up_tokenization_spaces=False)
        raise ValueError(f"to_string takes [pos] or [batch, pos] ids, not {tuple(tokens.shape)}.")

    def to_str_tokens(
        self, input, prepend_bos: bool | None = None, padding_side: str | None = None
    ) -> list[str] | list[list[str]]:
        """Each token as a string: text is tokenized first (`prepend_bos` as in `to_tokens`);
        ids may be `[pos]` or `[1, pos]` (tensor, numpy array or list of ints); a list of texts
        or id tensors gives one list per item (TL 3)."""
        tok = self._require_tokenizer("to_str_tokens")
        if isinstance(input, (list, tuple)) and not all(_is_py_int(t) for t in input):
            return [self.to_str_tokens(item, prepend_bos, padding_side) for item in input]
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)[0]
        elif isinstance(input, (Tensor, np.ndarray, list, tuple)):
            tokens = torch.as_tensor(input if isinstance(input, Tensor) else np.asarray(input))
            tokens = tokens.squeeze()
            if tokens.ndim > 1:
                raise ValueError(
                    f"to_str_tokens takes ids of shape [pos] or [1, pos], got "
                    f"{tuple(tokens.shape)}; pass a list of sequences for a batch."
                )
        else:
            raise TypeError(f"to_str_tokens: unsupported input type {type(input).__name__}.")
        ids = [[int(t)] for t in tokens.reshape(-1).tolist()]
        return tok.batch_decode(ids, clean_up_tokenization_spaces=False)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS); ValueError otherwise."""
        self._require_tokenizer("to_single_token")
        token = self.to_tokens(string, prepend_bos=False, move_to_device=False).squeeze()
        if token.ndim != 0:
            raise ValueError(
                f"{string!r} is not a single token: it tokenizes to {token.numel()} tokens "
                f"{token.tolist()}; use to_tokens for longer strings."
            )
        return int(token.item())

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id."""
        if not _is_int(int_token):
            raise TypeError(f"to_single_str_token takes one int token id, got {int_token!r}.")
        return self.to_str_tokens(torch.tensor([int(int_token)]))[0]

    def get_token_position(
        self,
        single_token: str | int,
        input,
        mode: str = "first",
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
    ) -> int:
        """Position of `single_token` (an id, or a string that is one token) in `input` (text,
        tokenized with `prepend_bos`, or ids `[pos]` / `[1, pos]`): its first or last
        occurrence (`mode`); ValueError if it does not occur (TL 3)."""
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}.")
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)
        else:
            tokens = torch.as_tensor(input)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError(
                    f"token ids of rank 2 must have shape [1, pos], not {tuple(tokens.shape)}."
                )
            tokens = tokens[0]
        if isinstance(single_token, str):
            single_token = self.to_single_token(single_token)
        elif isinstance(single_token, Tensor):
            single_token = single_token.item()
        found = (tokens == single_token).nonzero().flatten()
        if found.numel() == 0:
            raise ValueError(f"token {single_token!r} does not occur in the input.")
        return int(found[0] if mode == "first" else found[-1])


def _is_py_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_int(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, Tensor):
        return x.numel() == 1 and not x.dtype.is_floating_point and x.dtype != torch.bool
    return isinstance(x, (int, np.integer))
