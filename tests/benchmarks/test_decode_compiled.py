"""benchmarks/decode_compiled.py's fixed-shape step, uncompiled (compiling takes 15 s and
more): it decodes the ids the toolkit's cached step decodes, so the benchmark times the same
work both ways."""

from __future__ import annotations

import torch

from benchmarks import decode_compiled as bench
from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model


def test_the_static_step_decodes_what_the_toolkit_decodes():
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=97, context_length=24, emb_dim=32, n_layers=2, n_heads=4, drop_rate=0.0,
        attention="sdpa",
    )  # fmt: skip
    model = build_model(config, Plugins(autoload=False)).eval()
    ids = bench.decode_toolkit(model, 24)
    assert bench.decode_static(bench.StaticStep(model).eval(), model, 24) == ids
    assert len(set(ids)) > 1  # a random model still moves between ids
