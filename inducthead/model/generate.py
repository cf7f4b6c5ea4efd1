"""`HookedTransformer.generate`: TransformerLens 3's sampling loop (greedy, temperature, top-k,
top-p, frequency penalty, per-row EOS), for text or token ids.

No key-value cache: every step runs the full forward pass over the prompt and the tokens
generated so far, so `n` new tokens cost `n` forward passes of growing length (quadratic in the
length, where TL 3's cache makes each step one position). The models here are small, and the
forward is the model's own: hooks attached with `model.hooks(...)` see every step, and a step's
logits are exactly those `model(tokens)` gives.

The result is TL 3.9's `generate(..., use_past_kv_cache=False)`, token for token and, under the
same `torch.manual_seed`, draw for draw (tests/test_tl3_api_differential.py). TL 3.9's default,
its KV cache, agrees on rotary and ALiBi models, but from token ids without a tokenizer it
offsets standard and shortformer positions by the cache length (other tokens from the second
new one on, then an error) and fails with ungroup_grouped_query_attention; and a cache cannot
be exact for bidirectional attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inducthead._progress import progress_bar

RETURN_TYPES = ("input", "str", "tokens")


def sample_logits(
    logits: Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """One token id per row of `logits` `[batch, d_vocab]`, as TL 3's `utils.sample_logits`:
    temperature 0 is argmax; else logits / temperature, minus `freq_penalty` x the count of each
    id in `tokens` `[batch, pos]` (positions where `mask` is 0, the padding, are not counted;
    TL 3 counts them), then top-k (which takes precedence) or top-p filtering, then a draw from
    the categorical distribution (the same draw as TL 3's for the same logits and seed)."""
    if freq_penalty < 0:
        raise ValueError(f"freq_penalty must be >= 0, got {freq_penalty!r}.")
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits / temperature
    if freq_penalty > 0 and tokens is not None:
        n_vocab = logits.shape[-1]
        weight = torch.ones_like(tokens, dtype=logits.dtype) if mask is None else mask.to(logits)
        weight = weight * (tokens < n_vocab)
        counts = torch.zeros_like(logits).scatter_add_(-1, tokens.clamp(max=n_vocab - 1), weight)
        logits = logits - freq_penalty * counts
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    elif top_p is not None:
        ordered, order = torch.sort(logits, descending=True)
        beyond = ordered.softmax(-1).cumsum(-1) > top_p
        beyond[..., 1:] = beyond[..., :-1].clone()  # keep the token that crosses top_p
        beyond[..., 0] = False
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), -math.inf)
    return torch.distributions.Categorical(logits=logits.float()).sample()


class GenerateMixin:
    """Mixed into `HookedTransformer` through `inducthead.model.text.TextMethods`."""

    def generate(
        self,
        input: str | list[str] | Tensor = "",
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | list[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        use_past_kv_cache: bool = True,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        return_type: str | None = "input",
        verbose: bool = True,
        *,
        attention_mask: Tensor | None = None,
    ) -> str | list[str] | Tensor:
        """Continue `input` by up to `max_new_tokens` tokens (TransformerLens 3's `generate`).

        input: text (a string, or a list of strings, which are left-padded) with a tokenizer, or
        token ids `[batch, pos]` / `[pos]` (with or without one; `attention_mask` `[batch, pos]`,
        TL 4's addition, marks left padding in them). do_sample=False is greedy; otherwise
        `sample_logits` (temperature, top_k, top_p, freq_penalty). stop_at_eos: a row that emits
        `eos_token_id` (an id or a list; default the tokenizer's EOS) is finished and then gets the
        EOS id; generation stops when every row is finished. return_type: "input" (text for text,
        ids for ids), "str" (decoded without special tokens; a string for one row) or "tokens"
        (prompt + new ids). Sampling draws from torch's global generator (`torch.manual_seed`).
        Runs under `torch.inference_mode()`, in eval mode, and restores the training flag.

        The model never reads more than `n_ctx` tokens: prompt length + max_new_tokens - 1 above
        n_ctx is refused up front (TL 3 fails inside the forward pass). `use_past_kv_cache` is
        accepted and ignored (no cache: see the module docstring). Finished rows keep emitting
        EOS as in TL 3. Unlike TL 3: the training flags are restored (TL 3 leaves the model in
        eval mode); freq_penalty does not count padding and must be >= 0 (TL 3 ignores a
        negative one, TL 4 refuses it); token ids get a mask only from a left-padding tokenizer
        or `attention_mask` (TL 3 also applies its right-padding rule, which masks a prompt's
        trailing pad ids, e.g. a final EOS when EOS is the pad token); input embeddings and
        `output_logits` are not supported.
        """
        if return_type not in RETURN_TYPES:
            raise ValueError(
                f"return_type must be one of {RETURN_TYPES}, got {return_type!r} (input "
                "embeddings are not supported: pass token ids or text)."
            )
        _check_sampling(max_new_tokens, top_k, top_p, temperature, freq_penalty)
        tokens, mask, text_in, one_row = self._generation_prompt(
            input, prepend_bos, padding_side, attention_mask
        )
        n_prompt = tokens.shape[1]
        if n_prompt + max_new_tokens - 1 > self.cfg.n_ctx:
            raise ValueError(
                f"generate: a {n_prompt}-token prompt plus max_new_tokens={max_new_tokens} needs "
                f"the model to read {n_prompt + max_new_tokens - 1} tokens, above its n_ctx="
                f"{self.cfg.n_ctx}: shorten the prompt or ask for at most "
                f"{max(self.cfg.n_ctx - n_prompt + 1, 0)} new tokens."
            )
        stop_ids, fill_id = self._stop_tokens(stop_at_eos, eos_token_id)
        sampling = (
            dict(top_k=top_k, top_p=top_p, temperature=temperature, freq_penalty=freq_penalty)
            if do_sample
            else None
        )
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with torch.inference_mode():
                steps = progress_bar(range(max_new_tokens), disable=not verbose)
                tokens = self._generate_loop(tokens, mask, steps, stop_ids, fill_id, sampling)
        finally:
            for module, training in modes:
                module.training = training
        if return_type == "input":
            return_type = "str" if text_in else "tokens"
        if return_type == "tokens":
            return tokens[0] if one_row else tokens
        tok = self._require_tokenizer('return_type="str"')
        texts = [tok.decode(row.tolist(), skip_special_tokens=True) for row in tokens]
        return texts[0] if len(texts) == 1 else texts

    def _generation_prompt(self, input, prepend_bos, padding_side, attention_mask):
        """Prompt ids on the model's device, their padding mask (None without padding), whether
        the input was text, and whether it was one row of ids `[pos]`."""
        text_in = isinstance(input, str) or (
            isinstance(input, (list, tuple)) and all(isinstance(s, str) for s in input)
        )
        if text_in:
            self._require_tokenizer("text input", TypeError)
            if not isinstance(input, str) and len(input) > 1:
                padding_side = "left"  # TL 3: batched prompts end flush right
            tokens, mask = self._tokenize(input, prepend_bos, padding_side)
            tokens = self.validate_tokens(tokens.to(self.device))
            mask = mask.to(self.device)
        elif isinstance(input, torch.Tensor):
            if input.dtype.is_floating_point:
                raise TypeError(
                    "generate takes text or token ids; input embeddings are not supported."
                )
            one_row = input.ndim == 1
            tokens, mask = self._input_tokens(
                input.to(self.device), prepend_bos, padding_side, attention_mask
            )
            return tokens, _padding_only(mask), False, one_row
        else:
            raise TypeError(
                "generate takes a string, a list of strings or a torch.Tensor of token ids, got "
                f"{type(input).__name__}."
            )
        return tokens, _padding_only(mask), True, False

    def _stop_tokens(self, stop_at_eos: bool, eos_token_id) -> tuple[list[int], int]:
        """The ids that finish a row, and the id finished rows are filled with (TL 3)."""
        if not stop_at_eos:
            return [], 0
        tok_eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos_token_id is None:
            if tok_eos is None:
                raise ValueError(
                    "stop_at_eos=True needs an EOS id: pass eos_token_id=..., set a tokenizer "
                    "with an EOS token, or pass stop_at_eos=False."
                )
            eos_token_id = tok_eos
        if isinstance(eos_token_id, (list, tuple)) and not eos_token_id:
            raise ValueError("eos_token_id is an empty list.")
        ids = torch.as_tensor(eos_token_id)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"eos_token_id must be an int or a list of ints: {eos_token_id!r}.")
        if ids.ndim == 0:
            return [int(ids)], int(ids)
        stop_ids = ids.flatten().tolist()
        return stop_ids, tok_eos if tok_eos is not None else stop_ids[0]

    def _generate_loop(self, tokens, mask, steps, stop_ids, fill_id, sampling) -> Tensor:
        """Prompt + new ids; `sampling`: `sample_logits`'s options, or None for greedy."""
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        stop = torch.tensor(stop_ids, dtype=torch.long, device=tokens.device)
        # The mask is explicit: forward must not re-derive one from pad ids (a left-padding
        # tokenizer would make it, for token ids).
        side = None if self.tokenizer is None else "right"
        for _ in steps:
            logits = self(tokens, attention_mask=mask, padding_side=side)[:, -1]
            if sampling is None:
                new = logits.argmax(-1)
            else:
                new = sample_logits(logits, tokens=tokens, mask=mask, **sampling)
            if stop_ids:
                new = torch.where(finished, torch.full_like(new, fill_id), new)
                finished |= torch.isin(new, stop)
            tokens = torch.cat([tokens, new[:, None]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if stop_ids and bool(finished.all()):
                break
        return tokens


def _padding_only(mask: Tensor | None) -> Tensor | None:
    """None for a mask without padding; else the mask, whose rows must end in a real token."""
    if mask is None or bool(mask.all()):
        return None
    if not bool(mask[:, -1].all()):
        raise ValueError(
            "generate needs every prompt to end at the last position (left padding): a row's "
            "last token is padding. Pad on the left (padding_side='left')."
        )
    return mask


def _is_count(x, least: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= least


def _check_sampling(max_new_tokens, top_k, top_p, temperature, freq_penalty) -> None:
    if not _is_count(max_new_tokens, 0):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}.")
    if top_k is not None and not _is_count(top_k, 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}.")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}.")
    if not isinstance(temperature, (int, float)) or not temperature >= 0.0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}.")
    if not isinstance(freq_penalty, (int, float)) or not freq_penalty >= 0.0:
        raise ValueError(
            f"freq_penalty must be a number >= 0, got {freq_penalty!r} (TL 3 ignores a negative "
            "one; TL 4 refuses it)."
        )
