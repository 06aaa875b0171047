"""Family tests: every registered component of each model kind builds, runs forward and
backward; attention is causal when it says so; the book's maths checked against references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model

PLUGINS = Plugins(autoload=False)
CFG = ModelConfig(
    vocab_size=61, context_length=12, emb_dim=16, n_heads=4, n_layers=1, drop_rate=0.0
)
MODEL_SLOTS = {
    "attention": "attention",
    "normalization": "norm",
    "activation": "activation",
    "positional": "positional",
}


def every(kind: str) -> list[str]:
    return PLUGINS.registry.names(kind)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in MODEL_SLOTS for n in every(k)])
def test_every_model_component_builds_runs_and_trains(kind, name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**CFG.to_dict(), MODEL_SLOTS[kind]: name}), PLUGINS)
    x = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    logits = model(x)
    assert logits.shape == (2, CFG.context_length, CFG.vocab_size) and logits.dtype == torch.float32
    logits.sum().backward()
    # Gradients reach every parameter.
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", every("attention"))
@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 12), cut=st.integers(0, 11), seed=st.integers(0, 2**16))
def test_causal_attention_never_sees_the_future(name, t, cut, seed):
    component = PLUGINS.registry.get("attention", name)
    torch.manual_seed(seed)
    att = component.build(CFG).eval()
    x = torch.randn(2, t, CFG.emb_dim)
    changed = x.clone()
    cut = min(cut, t - 1)
    changed[:, cut + 1 :] = torch.randn_like(
        changed[:, cut + 1 :]
    )  # change only positions after cut
    with torch.no_grad():
        a, b = att(x), att(changed)
    if component.facts["causal"]:
        torch.testing.assert_close(a[:, : cut + 1], b[:, : cut + 1])


def test_sdpa_equals_the_books_multihead():
    torch.manual_seed(0)
    book = PLUGINS.registry.get("attention", "multihead").build(CFG).eval()
    fused = PLUGINS.registry.get("attention", "sdpa").build(CFG).eval()
    fused.load_state_dict(book.state_dict())
    x = torch.randn(3, 12, CFG.emb_dim)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), book(x), atol=1e-5, rtol=1e-5)


def test_multihead_matches_explicit_per_head_maths():
    torch.manual_seed(1)
    att = PLUGINS.registry.get("attention", "multihead").build(CFG).eval()
    x = torch.randn(1, 5, CFG.emb_dim)
    q, k, v = att.W_query(x)[0], att.W_key(x)[0], att.W_value(x)[0]
    hd = CFG.emb_dim // CFG.n_heads
    heads = []
    for h in range(CFG.n_heads):
        s = slice(h * hd, (h + 1) * hd)
        scores = q[:, s] @ k[:, s].T / math.sqrt(hd)
        scores = scores.masked_fill(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), -math.inf)
        heads.append(torch.softmax(scores, -1) @ v[:, s])
    expected = att.out_proj(torch.cat(heads, -1))
    with torch.no_grad():
        torch.testing.assert_close(att(x)[0], expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=16))
def test_layernorm_is_the_books_formula(values):
    norm = PLUGINS.registry.get("normalization", "layernorm").build(len(values))
    with torch.no_grad():
        norm.scale.uniform_(0.5, 1.5)
        norm.shift.uniform_(-1, 1)
    x = torch.tensor([values], dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    expected = norm.scale.double() * (x - mean) / torch.sqrt(var + 1e-5) + norm.shift.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, atol=1e-4, rtol=1e-4)


def test_rmsnorm_formula():
    norm = PLUGINS.registry.get("normalization", "rmsnorm").build(8, eps=1e-6)
    x = torch.randn(3, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)


def test_gelu_is_the_tanh_approximation():
    ff = PLUGINS.registry.get("activation", "gelu").build(CFG)
    act = ff.layers[1]
    x = torch.linspace(-6, 6, 101)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(act(x), expected)
    assert [type(m).__name__ for m in ff.layers] == ["Linear", "GELU", "Linear"]
    assert ff.layers[0].out_features == 4 * CFG.emb_dim


def test_dropout_zero_is_deterministic_in_train_mode():
    torch.manual_seed(0)
    model = build_model(CFG, PLUGINS).train()
    x = torch.randint(0, CFG.vocab_size, (2, 8))
    torch.testing.assert_close(model(x), model(x))
    dropped = build_model(ModelConfig(**{**CFG.to_dict(), "drop_rate": 0.5}), PLUGINS).train()
    assert not torch.equal(dropped(x), dropped(x))
