"""Multi-head latent attention (`mla`, plugins/latent.py) against the paper's formula recomputed
from its own weights head by head, with each inside-attention positional bound and low-rank
queries; its generation path (the absorbed form) against its training forward, caching only
the latent and the rotary key; its defaults and option checks through a spec; and a sweep."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import small_toml, validation_error

from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model

PLUGINS = Plugins(autoload=False)
CFG = ModelConfig(
    vocab_size=37, context_length=10, emb_dim=32, n_heads=4, n_layers=1, drop_rate=0.0
)


def rms(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * gain


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + (0 if layer.bias is None else layer.bias)


def reference(model, x: torch.Tensor) -> torch.Tensor:
    """The paper's attention for one sequence x (T, d), head by head: keys and values
    up-projected from the normed latent, the decoupled rotary query and key concatenated to
    them, scores scaled by 1 / sqrt(head_dim + rope_dim)."""
    att, pos = model.trf_blocks[0].att, model.pos_emb
    t = x.shape[0]
    nh, hs, r = CFG.n_heads, CFG.head_dim, att.rope_dim
    if hasattr(att, "W_query"):
        q = linear(x, att.W_query)
    else:
        q = linear(rms(linear(x, att.W_dq), att.q_latent_norm.weight), att.W_uq)
    q = q.view(t, nh, hs + r).transpose(0, 1)  # (nh, T, hs + r)
    latent = rms(linear(x, att.W_dkv), att.kv_latent_norm.weight)  # (T, kv_rank)
    k_rope = linear(x, att.W_kr)  # (T, r), shared by the heads
    q_rope = q[..., hs:]
    if hasattr(pos, "rotate"):
        q_rope, k_rope = pos.rotate(q_rope[None], k_rope[None, None])
        q_rope, k_rope = q_rope[0], k_rope[0, 0]
    bias = pos.score_bias(t, t) if hasattr(pos, "score_bias") else None
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    heads = []
    for h in range(nh):
        k_nope = latent @ att.W_uk.weight[h * hs : (h + 1) * hs].T  # (T, hs)
        v = latent @ att.W_uv.weight[h * hs : (h + 1) * hs].T
        scores = (q[h, :, :hs] @ k_nope.T + q_rope[h] @ k_rope.T) / math.sqrt(hs + r)
        if bias is not None:
            scores = scores + bias[h]
        heads.append(torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1) @ v)
    return linear(torch.cat(heads, dim=-1), att.out_proj)


def mla_model(positional: str, **options):
    attention = {"name": "mla", **options}
    config = ModelConfig(**{**CFG.to_dict(), "attention": attention, "positional": positional})
    model = build_model(config, PLUGINS).eval()
    with torch.no_grad():  # gains away from 1, so the latents' norms are checked too
        for name, p in model.named_parameters():
            if "latent_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


CASES = [
    ("learned", {}),
    ("rope", {}),
    ("alibi", {}),
    ("rope", {"q_rank": 12, "kv_rank": 6, "rope_dim": 4}),
    ("none", {"kv_rank": 40, "rope_dim": 2}),
]


@pytest.mark.parametrize(("positional", "options"), CASES)
def test_mla_is_the_papers_latent_attention(positional, options):
    torch.manual_seed(0)
    model = mla_model(positional, **options)
    x = torch.randn(2, 7, CFG.emb_dim)
    with torch.no_grad():
        out = model.trf_blocks[0].att(x)
        for b in range(2):
            torch.testing.assert_close(out[b], reference(model, x[b]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("positional", "options"), CASES)
def test_generation_caches_only_the_latent_and_rotary_key_and_gives_what_training_does(
    positional, options
):
    """The absorbed form (queries folded through W_uk, outputs through W_uv) fed in pieces
    equals the training forward over the whole sequence; the cache holds r_kv + r numbers per
    position, once for all heads."""
    torch.manual_seed(1)
    model = mla_model(positional, **options)
    att = model.trf_blocks[0].att
    x = torch.randn(3, 9, CFG.emb_dim)
    cache: dict = {}
    with torch.no_grad():
        whole = att(x)
        pieces = [att.forward_cached(x[:, a:b], cache, a) for a, b in ((0, 4), (4, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)
    tensors = {k: v.shape for k, v in cache.items() if isinstance(v, torch.Tensor)}
    assert tensors == {"latent": (3, 1, CFG.context_length, att.kv_rank + att.rope_dim)}


def test_defaults_and_parameter_shapes():
    att = PLUGINS.registry.get("attention", "mla").build(CFG)
    d, nh, hs = CFG.emb_dim, CFG.n_heads, CFG.head_dim
    assert (att.kv_rank, att.rope_dim) == (d // 2, hs // 2)
    shapes = {name: tuple(p.shape) for name, p in att.named_parameters()}
    assert not CFG.qkv_bias  # so only out_proj has a bias
    assert shapes == {
        "W_query.weight": (nh * (hs + hs // 2), d),
        "W_dkv.weight": (d // 2, d),
        "kv_latent_norm.weight": (d // 2,),
        "W_kr.weight": (hs // 2, d),
        "W_uk.weight": (nh * hs, d // 2),
        "W_uv.weight": (nh * hs, d // 2),
        "out_proj.weight": (d, nh * hs),
        "out_proj.bias": (d,),
    }
    # With qkv_bias the projections from x get biases; W_uk and W_uv never do (generation
    # folds them into the queries and outputs).
    biased = PLUGINS.registry.get("attention", "mla").build(
        ModelConfig(**{**CFG.to_dict(), "qkv_bias": True}), q_rank=8
    )
    assert {n for n, _ in biased.named_parameters() if n.endswith("bias")} == {
        "W_dq.bias", "W_uq.bias", "W_dkv.bias", "W_kr.bias", "out_proj.bias",
    }  # fmt: skip
    # The rope_dim default stays even and at least 2 for narrow heads.
    narrow = ModelConfig(**{**CFG.to_dict(), "emb_dim": 24, "n_heads": 4})  # head_dim 6
    assert PLUGINS.registry.get("attention", "mla").build(narrow).rope_dim == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("kv_rank = 0", "kv_rank must be at least 1, got 0"),
        ("rope_dim = 3", "rope_dim must be an even number >= 2"),
        ("rope_dim = 0", "rope_dim must be an even number >= 2"),
        ("q_rank = 0", "q_rank must be at least 1 when given, got 0"),
        ("kv_rank = 2.5", "kv_rank.*must be an integer"),
    ],
)
def test_bad_options_are_one_line_errors_at_validation(tmp_path, capsys, options, message):
    text = small_toml("cat", model=f'attention = {{ name = "mla", {options} }}')
    err = validation_error(tmp_path, text, capsys)
    assert re.search(message, err), err


def test_a_partial_rope_with_mla_is_a_one_line_error_at_validation(tmp_path, capsys):
    model = 'attention = "mla"\npositional = { name = "rope", fraction = 0.5 }'
    err = validation_error(tmp_path, small_toml("cat", model=model), capsys)
    assert "attention 'mla' turns its own rope_dim dimensions; positional 'rope' takes no" in err


def test_a_sweep_trains_mla_against_sdpa(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(small_toml("cat") + '\n[grid]\n"model.attention" = ["sdpa", "mla"]\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "attention=mla" in capsys.readouterr().out
