"""benchmarks/optimizers.py's arithmetic, without timing anything: ratios to AdamW taken round
by round, the state's bytes (a combined optimizer's parts included), and a short real pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks import optimizers as bench
from plugins.optimizers import Combined


def test_ratios_are_the_median_of_each_rounds_own_ratio():
    times = {"adamw": [1.0, 2.0, 4.0], "lion": [1.5, 2.0, 2.0]}  # ratios 1.5, 1.0, 0.5
    assert bench.ratios(times, "adamw") == {"adamw": 1.0, "lion": 1.0}


def test_state_bytes_counts_every_tensor_of_every_part():
    a, b = nn.Linear(4, 4), nn.Linear(4, 2)
    both = Combined(
        torch.optim.AdamW(a.parameters()), torch.optim.SGD(b.parameters(), momentum=0.9)
    )
    for p in [*a.parameters(), *b.parameters()]:
        p.grad = torch.ones_like(p)
    both.step()
    adam = sum(2 * p.numel() * 4 + 4 for p in a.parameters())  # two moments, a float step
    sgd = sum(p.numel() * 4 for p in b.parameters())  # the momentum buffer
    assert bench.state_bytes(both) == adam + sgd


@pytest.mark.slow
def test_a_short_pass_prints_every_optimizer(capsys, monkeypatch):
    monkeypatch.setattr(
        bench, "CONFIG", {**bench.CONFIG, "emb_dim": 32, "n_heads": 2, "n_layers": 1}
    )
    assert bench.main(["--rounds", "1", "--steps", "1", "--step-ms", "100"]) == 0
    out = capsys.readouterr().out
    for name in ("adamw", "schedule-free", "muon", "muon/float32"):
        assert f"\n{name} " in out
