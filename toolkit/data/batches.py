"""(x, y) next-token windows cut out of token arrays, for training and evaluation.

`TrainBatches` visits every window of the training split once per epoch in a seeded order and
can say where it is (`state()`), so an interrupted run resumes at the same batch.
`eval_batches` picks fixed windows of a split, the same on every call: by default on the
training stride grid, so the train loss scores windows the model trains on. Only the
batch being built is ever materialized: the arrays stay memory-mapped. Not here: tokenizing
and the cache (tokens.py).
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.errors import DataError


def count_windows(n_tokens: int, context_length: int, stride: int) -> int:
    """How many (context_length + 1)-token windows start at 0, stride, 2*stride, ... and fit in
    n_tokens tokens. `count_windows(10, 4, 4) == 2` (starts 0 and 4)."""
    if context_length < 1 or stride < 1:
        raise ValueError(f"context_length and stride must be >= 1, got {context_length}, {stride}")
    if n_tokens < context_length + 1:
        return 0
    return (n_tokens - context_length - 1) // stride + 1


def _windows(
    tokens: np.ndarray, starts: np.ndarray, context_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather windows by index arithmetic; only this batch is ever materialized (as int64)."""
    w = np.asarray(tokens[starts[:, None] + np.arange(context_length + 1)], dtype=np.int64)
    x = torch.from_numpy(np.ascontiguousarray(w[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(w[:, 1:]))
    return x, y


def _positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


class TrainBatches:
    """Yields (x, y) int64 torch tensors of shape (batch_size, context_length): y is x shifted
    by one.

    Each epoch visits every window start (stride apart) once, in an order permuted by a numpy
    Generator seeded from (seed, epoch); the last partial batch of an epoch is dropped (an
    epoch holding fewer windows than batch_size is a DataError). `state()` -> dict(epoch=...,
    index=...) and `load_state(dict)` let a run resume exactly where it was. Infinite.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        context_length: int,
        batch_size: int,
        seed: int,
        stride: int | None = None,
    ) -> None:
        stride = context_length if stride is None else stride
        _positive(context_length=context_length, batch_size=batch_size, stride=stride)
        self.tokens = tokens
        self.context_length = context_length
        self.batch_size = batch_size
        self.seed = int(seed)
        self.stride = stride
        self.n_windows = count_windows(len(tokens), context_length, stride)
        self.batches_per_epoch = self.n_windows // batch_size
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the training split has {len(tokens):,} tokens: {self.n_windows} window(s) of "
                f"{context_length + 1} tokens (stride {stride}), fewer than batch_size "
                f"{batch_size}; use a smaller batch_size or context_length, or a larger corpus"
            )
        self.epoch = 0
        self.index = 0  # batches already yielded in this epoch
        self._order: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            # SeedSequence mixes (seed, epoch) into independent streams; it needs non-negatives.
            rng = np.random.default_rng([self.seed % 2**64, epoch])
            self._order = (epoch, rng.permutation(self.n_windows))
        return self._order[1]

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        order = self._permutation(self.epoch)
        picks = order[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        self.index += 1
        if self.index == self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return _windows(self.tokens, picks * self.stride, self.context_length)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict[str, int]) -> None:
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise DataError(
                f"cannot resume batches at {state!r}: an epoch here has "
                f"{self.batches_per_epoch} batches; was the data or batch size changed?"
            )
        self.epoch, self.index = epoch, index


EVAL_WINDOWS = ("grid", "spread")


def eval_starts(
    n_tokens: int, context_length: int, stride: int, k: int, windows: str = "grid"
) -> np.ndarray:
    """Where the up-to-k evaluation windows of a split of n_tokens start, none overlapping
    another in the positions it predicts.

    "grid": on the training stride grid (0, stride, 2*stride, ...: the windows training visits;
    with stride < context_length, every m-th of them, m = ceil(context_length / stride), so no
    position is scored twice), every one when they fit in k, else k spread evenly along it.
    "spread": k starts spread evenly from the first token to the last whole window, rounded to
    any position (what runs recorded before train.eval_windows existed)."""
    if windows not in EVAL_WINDOWS:
        raise ValueError(f"windows must be one of {EVAL_WINDOWS}, got {windows!r}")
    if windows == "spread":
        k = min(k, count_windows(n_tokens, context_length, context_length))
        return np.linspace(0, n_tokens - context_length - 1, k).round().astype(np.int64)
    step = stride * -(-context_length // stride)  # the smallest multiple of stride >= context
    available = count_windows(n_tokens, context_length, step)
    k = min(k, available)
    # Evenly spaced picks along the grid, from its first window to its last; distinct because
    # k <= available.
    picks = np.linspace(0, available - 1, k).round().astype(np.int64)
    return picks * step


def eval_batches(
    tokens: np.ndarray,
    context_length: int,
    batch_size: int,
    max_batches: int,
    *,
    stride: int | None = None,
    windows: str = "grid",
    split: str = "validation",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed evaluation batches: up to max_batches * batch_size windows chosen by `eval_starts`
    (stride defaults to context_length), identical on every call. A small split gives fewer
    windows; the final batch may be smaller than batch_size. `split` names it in errors."""
    stride = context_length if stride is None else stride
    _positive(
        context_length=context_length, batch_size=batch_size, max_batches=max_batches,
        stride=stride,
    )  # fmt: skip
    n = len(tokens)
    if n < context_length + 1:
        raise DataError(
            f"the {split} split has {n:,} tokens, fewer than context_length + 1 = "
            f"{context_length + 1}; use a smaller context_length or hold out more text "
            f"(data.{'test' if split == 'test' else 'val'}_fraction) or a larger corpus"
        )
    starts = eval_starts(n, context_length, stride, max_batches * batch_size, windows)
    return [
        _windows(tokens, starts[i : i + batch_size], context_length)
        for i in range(0, len(starts), batch_size)
    ]
