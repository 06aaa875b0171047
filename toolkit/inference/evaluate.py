"""Loss, perplexity and bits per byte of a model over a whole token array, and `ablate eval`.

`evaluate_corpus` scores every token of the array after the first exactly once: the array is
cut into non-overlapping windows of context_length inputs, each predicting its next tokens,
batched; the tail (fewer than context_length predictions) is a last, shorter window. Each
window starts without context, so this measures the model as it reads the text window by
window, which is what training's evaluation batches measure too (on a sample of windows). The
array is read a batch at a time (the token cache is memory-mapped), so memory stays constant
however long the corpus is.

Definitions (as in every table of the toolkit): loss = total cross-entropy in nats / tokens
predicted; perplexity = exp(loss); bits per byte = total nats / (ln 2 x UTF-8 bytes of the
predicted tokens).

`ablate eval CHECKPOINT_OR_RUN_DIR` (add_parser / cmd_eval) evaluates a run's checkpoint, or an
imported one, on a corpus (the run's by default), printing the three numbers; it writes nothing
but the token cache. torch and numpy are imported on first use, so building the command line
parser stays cheap. Not here: training-time evaluation on fixed batches (train.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from toolkit.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


# progress(targets scored so far, targets in all)
Progress = Callable[[int, int], None]
SPLITS = ("all", "train", "val")


def evaluate_corpus(
    model: nn.Module,
    tokens: np.ndarray,
    token_bytes: Any,
    context_length: int,
    batch_size: int,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, float]:
    """Score every token of `tokens` after the first, once, in windows of context_length.

    Returns {"loss", "perplexity", "bpb", "tokens", "bytes", "nats"}: mean nats per predicted
    token, exp(loss), bits per UTF-8 byte, how many tokens were predicted, their bytes, and the
    total nats (so results over several arrays combine exactly: see combine()).
    token_bytes[i] is the number of UTF-8 bytes id i stands for.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    for name, value in (("context_length", context_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    n = len(tokens)
    if n < 2:
        raise DataError(f"{n} token(s) to evaluate; at least 2 are needed (one to predict)")
    n_bytes_table = np.asarray(token_bytes, dtype=np.int64)
    targets = n - 1
    full = targets // context_length  # windows with context_length predictions
    tail = targets % context_length
    was_training = model.training
    model.eval()
    nats, n_bytes, done = 0.0, 0, 0
    try:
        with torch.inference_mode():
            # Full windows, batch_size at a time: window w reads tokens[w*C : w*C + C + 1].
            for first in range(0, full, batch_size):
                count = min(batch_size, full - first)
                start = first * context_length
                chunk = np.asarray(tokens[start : start + count * context_length + 1], np.int64)
                x = chunk[:-1].reshape(count, context_length)
                y = chunk[1:].reshape(count, context_length)
                nats += _nats(model, F, torch, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
            if tail:
                chunk = np.asarray(tokens[full * context_length :], np.int64)  # tail + 1 tokens
                x, y = chunk[None, :-1], chunk[None, 1:]
                nats += _nats(model, F, torch, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
    finally:
        model.train(was_training)
    return _metrics(nats, done, n_bytes)


def _nats(model: nn.Module, F: Any, torch: Any, x: Any, y: Any, device: str) -> float:
    """Summed cross-entropy in nats of the model's predictions of y from x (numpy int64)."""
    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    logits = model(xs)
    return F.cross_entropy(logits.flatten(0, 1).float(), ys.flatten(), reduction="sum").item()


def _metrics(nats: float, tokens: int, n_bytes: int) -> dict[str, float]:
    loss = nats / tokens if tokens else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpb": nats / (math.log(2) * n_bytes) if n_bytes else float("nan"),
        "tokens": tokens,
        "bytes": n_bytes,
        "nats": nats,
    }


def combine(results: Iterable[dict[str, float]]) -> dict[str, float]:
    """One result from several evaluate_corpus results (e.g. train and val): sums of nats,
    tokens and bytes, and the metrics recomputed from them, exactly as one pass would."""
    results = list(results)
    return _metrics(
        sum(r["nats"] for r in results),
        sum(int(r["tokens"]) for r in results),
        sum(int(r["bytes"]) for r in results),
    )


__all__ = [
    "combine",
    "evaluate_corpus",
]
