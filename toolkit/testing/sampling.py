"""Conformance checks of `sampler` components.

Checked, for drawn batch sizes, vocabulary sizes (1..80), logit scales and seeds: the factory
returns a callable; sampler(logits (B, V), generator) returns (B, 1) int64 ids in [0, V); it
leaves the logits it was given alone; generators seeded alike give the same ids (the global RNG
is seeded too, so a sampler drawing from it still replays); bfloat16 logits are accepted.

Not checked: the distribution of the ids (that top-k picks only among the k largest logits, or
that a temperature scales as it should), and sampling inside a generation loop.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from toolkit.testing.core import SEEDS, Case, hypothesis_settings


def check_sampler(case: Case, max_examples: int) -> None:
    sampler = case.build(model=False)
    if not callable(sampler):
        case.fail("build", f"returned {type(sampler).__name__}, which is not callable")

    def draw_ids(logits: torch.Tensor, seed: int, check: str) -> torch.Tensor:
        with case.check(check):
            ids = sampler(logits, torch.Generator().manual_seed(seed))
        b, v = logits.shape
        if not isinstance(ids, torch.Tensor):
            case.fail(check, f"returned {type(ids).__name__}, not a tensor of ids")
        if tuple(ids.shape) != (b, 1) or ids.dtype != torch.int64:
            case.fail(check, f"returned {tuple(ids.shape)} {ids.dtype}, not ({b}, 1) torch.int64")
        if ((ids < 0) | (ids >= v)).any():
            case.fail(check, f"returned ids {ids.flatten().tolist()} outside the range [0, {v})")
        return ids

    @hypothesis_settings(max_examples)
    @given(
        b=st.integers(1, 4),
        v=st.integers(1, 80),
        scale=st.sampled_from((0.1, 1.0, 10.0, 100.0)),
        seed=SEEDS,
    )
    def run(b: int, v: int, scale: float, seed: int) -> None:
        case.inputs = f"logits ({b}, {v}) scale={scale} seed={seed}"
        torch.manual_seed(seed)  # a sampler drawing from the global RNG still replays
        logits = torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * scale
        given_logits = logits.clone()
        ids = draw_ids(given_logits, seed, "ids in range")
        if not torch.equal(given_logits, logits):
            case.fail("logits untouched", "it changed the logits it was given in place")
        again = draw_ids(logits.clone(), seed, "seeded")
        if not torch.equal(ids, again):
            case.fail("seeded", "two generators with the same seed gave different ids")
        draw_ids(logits.bfloat16(), seed, "bfloat16")

    run()
