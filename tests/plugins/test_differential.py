"""Differential attention (`diff`, plugins/differential.py) against the paper's formula recomputed
from its own weights head by head, with each inside-attention positional bound and qk_norm; its
parameters against `sdpa`'s; its option checks through a spec; and a sweep that trains it."""

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
    vocab_size=37, context_length=10, emb_dim=24, n_heads=4, n_layers=1, drop_rate=0.0
)


def causal_softmax(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
    """(T, hs) each -> the (T, T) causal attention map softmax(q k^T / sqrt(hs) + bias)."""
    t, hs = q.shape
    scores = q @ k.T / math.sqrt(hs) + bias
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)


def rms(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


def reference(model, x: torch.Tensor, lambda_init: float) -> torch.Tensor:
    """The paper's differential attention for one sequence x (T, d), written out head by head
    from the module's weights: sub-heads 2i and 2i + 1 of the query and key projections are
    head i's two maps, its value is 2 head_dim wide."""
    att, pos = model.trf_blocks[0].att, model.pos_emb
    t = x.shape[0]
    nh, hs = CFG.n_heads, CFG.emb_dim // CFG.n_heads
    q = (x @ att.W_query.weight.T).view(t, nh, hs).transpose(0, 1)  # (nh, T, hs)
    k = (x @ att.W_key.weight.T).view(t, nh, hs).transpose(0, 1)
    v = (x @ att.W_value.weight.T).view(t, nh // 2, 2 * hs).transpose(0, 1)  # (h, T, 2 hs)
    if att.q_norm is not None:
        q, k = rms(q, att.q_norm.weight, 1e-6), rms(k, att.k_norm.weight, 1e-6)
    q, k = pos.rotate(q[None], k[None]) if hasattr(pos, "rotate") else (q[None], k[None])
    q, k = q[0], k[0]
    bias = pos.score_bias(t, t) if hasattr(pos, "score_bias") else None
    lam = (
        torch.exp(torch.dot(att.lambda_q1, att.lambda_k1))
        - torch.exp(torch.dot(att.lambda_q2, att.lambda_k2))
        + lambda_init
    )
    heads = []
    for i in range(nh // 2):
        b = 0.0 if bias is None else bias[2 * i]  # both maps of head i: ALiBi's row 2i
        a = causal_softmax(q[2 * i], k[2 * i], b) - lam * causal_softmax(
            q[2 * i + 1], k[2 * i + 1], b
        )
        heads.append(rms(a @ v[i], att.subln.weight, 1e-6) * (1 - lambda_init))
    return torch.cat(heads, dim=-1) @ att.out_proj.weight.T + att.out_proj.bias


@pytest.mark.parametrize(
    ("positional", "options"),
    [
        ("learned", {}),
        ("rope", {}),
        ("alibi", {}),
        ("rope", {"qk_norm": True, "lambda_init": 0.3}),
    ],
)
def test_diff_is_the_papers_differential_attention(positional, options):
    torch.manual_seed(0)
    attention = {"name": "diff", **options}
    model = build_model(ModelConfig(**{**CFG.to_dict(), "attention": attention,
                                       "positional": positional}), PLUGINS).eval()  # fmt: skip
    att = model.trf_blocks[0].att
    with torch.no_grad():  # gains away from 1, so the norms' weights are checked too
        for p in (
            att.subln.weight,
            *([att.q_norm.weight, att.k_norm.weight] if att.q_norm else []),
        ):
            p.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, CFG.emb_dim)
    with torch.no_grad():
        out = att(x)
        for b in range(2):
            expected = reference(model, x[b], options.get("lambda_init", 0.8))
            torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-4)


def test_its_matrices_are_sdpas_and_lambda_and_the_head_norm_are_all_it_adds():
    torch.manual_seed(0)
    diff = PLUGINS.registry.get("attention", "diff").build(CFG)
    sdpa = PLUGINS.registry.get("attention", "sdpa").build(CFG)
    hs = CFG.head_dim
    shapes = {name: p.shape for name, p in diff.named_parameters()}
    assert {n: s for n, s in shapes.items() if n in dict(sdpa.named_parameters())} == {
        n: p.shape for n, p in sdpa.named_parameters()
    }
    extra = {n: s for n, s in shapes.items() if n not in dict(sdpa.named_parameters())}
    assert extra == {
        "lambda_q1": (hs,), "lambda_k1": (hs,), "lambda_q2": (hs,), "lambda_k2": (hs,),
        "subln.weight": (2 * hs,),
    }  # fmt: skip
    # The lambda vectors start small (normal, std 0.1), so lambda starts near lambda_init.
    assert abs(float(diff.lambda_full().detach()) - 0.8) < 0.5
    # Trained sdpa weights load into diff: a fine-tune can start from them.
    missing = diff.load_state_dict(sdpa.state_dict(), strict=False).missing_keys
    assert set(missing) == set(extra)


@pytest.mark.parametrize(
    ("n_heads", "attention", "message"),
    [
        (1, '"diff"', "'diff': n_heads must be even .*got 1; choose an even n_heads"),
        (2, '{ name = "diff", lambda_init = 1.0 }', r"lambda_init must be in \[0, 1\)"),
        (2, '{ name = "diff", lambda_init = -0.1 }', r"lambda_init must be in \[0, 1\)"),
    ],
)
def test_bad_settings_are_one_line_errors_at_validation(
    tmp_path, capsys, n_heads, attention, message
):
    text = small_toml("cat", model=f"attention = {attention}")
    err = validation_error(tmp_path, text.replace("n_heads = 2", f"n_heads = {n_heads}"), capsys)
    assert re.search(message, err), err


def test_a_sweep_trains_diff_against_sdpa(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(small_toml("cat") + '\n[grid]\n"model.attention" = ["sdpa", "diff"]\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "attention=diff" in table
