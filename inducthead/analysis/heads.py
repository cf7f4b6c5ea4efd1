"""Heads: `Head(layer, head)`, a tuple printed `L1H4`, accepted and returned everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

_HEAD = re.compile(r"^\s*L(\d+)H(\d+)\s*$", re.IGNORECASE)


class Head(NamedTuple):
    """An attention head: a `(layer, head)` tuple (equal to the plain tuple) shown as `L1H4`."""

    layer: int
    head: int

    def __repr__(self) -> str:
        return f"L{self.layer}H{self.head}"

    __str__ = __repr__

    @classmethod
    def parse(cls, text: str) -> Head:
        """`"L1H4"` -> `Head(1, 4)`."""
        (head,) = parse_heads([text])
        return head


def head_label(head: tuple[int, int]) -> str:
    """`(1, 4)` -> `"L1H4"`."""
    return f"L{head[0]}H{head[1]}"


def all_heads(n_layers: int, n_heads: int) -> list[Head]:
    """Every head of a model, layer by layer."""
    return [Head(l, h) for l in range(n_layers) for h in range(n_heads)]


def parse_heads(
    spec: str | Iterable, n_layers: int | None = None, n_heads: int | None = None
) -> list[Head]:
    """`"L1H4,L1H6"`, `["L1H4"]` or `[(1, 4)]` -> `[Head(1, 4), ...]`, checked against the
    model's size when given (ValueError listing the valid range)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    heads = []
    for item in items:
        if isinstance(item, str):
            m = _HEAD.match(item)
            if not m:
                raise ValueError(
                    f"cannot read head {item!r}; write heads as L<layer>H<head>, e.g. L1H4."
                )
            head = Head(int(m.group(1)), int(m.group(2)))
        else:
            try:
                head = Head(int(item[0]), int(item[1]))
            except (TypeError, IndexError, ValueError):
                raise ValueError(f"cannot read head {item!r}; use a (layer, head) tuple.") from None
            if len(item) != 2:
                raise ValueError(f"cannot read head {item!r}; use a (layer, head) tuple.")
        if n_layers is not None and not (0 <= head[0] < n_layers and 0 <= head[1] < n_heads):
            raise ValueError(
                f"head {head_label(head)} does not exist: valid layers are 0..{n_layers - 1} and "
                f"heads 0..{n_heads - 1}."
            )
        heads.append(head)
    return heads


def check_heads(heads, shape, allow_empty: bool = False) -> list[Head]:
    """`(1, 4)`, `"L1H4,L1H6"`, `["L1H4"]` or `[(1, 4), ...]` -> deduplicated `[Head, ...]`,
    checked against `shape` (anything with `n_layers` and `n_heads`: a model adapter or config);
    ValueError listing the valid layers and heads for one that does not exist."""
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    out = list(dict.fromkeys(parse_heads(heads, shape.n_layers, shape.n_heads)))
    if not out and not allow_empty:
        raise ValueError("no heads given; name them as (layer, head) tuples or 'L1H4'.")
    return out
