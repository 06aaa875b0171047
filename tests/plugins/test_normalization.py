"""Normalizations against float64 references: torch-layernorm, scalenorm, none (and the book's
layernorm as the yardstick for torch's); option checks; registration."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.api.manager import Plugins
from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model

PLUGINS = Plugins(autoload=False)
ROWS = st.lists(st.floats(-100, 100), min_size=2, max_size=16)


def norm(name: str, dim: int, **options):
    return PLUGINS.registry.get("normalization", name).build(dim, **options)


def test_every_normalization_is_registered():
    names = PLUGINS.registry.names("normalization")
    assert {"layernorm", "rmsnorm", "torch-layernorm", "scalenorm", "none"} <= set(names)
    for name in ("torch-layernorm", "scalenorm", "none"):
        component = PLUGINS.registry.get("normalization", name)
        assert component.plugin == "plugins.normalization"
        assert component.description and "\n" not in component.description


@settings(max_examples=25, deadline=None)
@given(values=ROWS, seed=st.integers(0, 2**16))
def test_torch_layernorm_is_the_layernorm_formula(values, seed):
    torch.manual_seed(seed)
    ln = norm("torch-layernorm", len(values))
    assert isinstance(ln, torch.nn.LayerNorm) and ln.eps == 1e-5
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    x = torch.tensor([values], dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    expected = ln.weight.double() * (x - mean) / torch.sqrt(var + 1e-5) + ln.bias.double()
    with torch.no_grad():
        torch.testing.assert_close(ln(x.float()).double(), expected, atol=1e-4, rtol=1e-4)


def test_torch_layernorm_equals_the_books_when_parameters_match():
    torch.manual_seed(0)
    book, ours = norm("layernorm", 24, eps=1e-6), norm("torch-layernorm", 24, eps=1e-6)
    with torch.no_grad():
        book.scale.uniform_(0.5, 1.5)
        book.shift.uniform_(-1, 1)
        ours.weight.copy_(book.scale)
        ours.bias.copy_(book.shift)
    x = torch.randn(3, 5, 24) * 4 + 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x), book(x), atol=1e-6, rtol=1e-5)
    # Same parameter count: swapping one for the other is a pure implementation ablation.
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in book.parameters())


@settings(max_examples=25, deadline=None)
@given(values=ROWS, g=st.floats(0.1, 10))
def test_scalenorm_is_g_x_over_its_norm(values, g):
    sn = norm("scalenorm", len(values))
    with torch.no_grad():
        sn.g.fill_(g)
    x = torch.tensor([values], dtype=torch.float64)
    expected = g * x / x.norm(dim=-1, keepdim=True).clamp(min=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(sn(x.float()).double(), expected, atol=1e-5, rtol=1e-5)


def test_scalenorm_has_one_scalar_initialised_to_sqrt_dim():
    sn = norm("scalenorm", 64)
    params = list(sn.parameters())
    assert len(params) == 1 and params[0].shape == ()
    assert sn.g.item() == pytest.approx(math.sqrt(64))
    # At initialisation the output has unit RMS per position, like LayerNorm's and RMSNorm's.
    y = sn(torch.randn(4, 7, 64) * 3)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4, 7))


def test_scalenorm_eps_guards_the_zero_vector():
    sn = norm("scalenorm", 8, eps=1e-3)
    x = torch.zeros(2, 8, requires_grad=True)
    y = sn(x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(2, 8)) and torch.isfinite(x.grad).all()
    tiny = torch.full((1, 8), 1e-6, dtype=torch.float64)  # ||x|| below eps: divide by eps
    with torch.no_grad():
        torch.testing.assert_close(sn.double()(tiny), math.sqrt(8) * tiny / 1e-3)


@settings(max_examples=20, deadline=None)
@given(values=ROWS)
def test_none_returns_its_input_unchanged(values):
    identity = norm("none", len(values))
    x = torch.tensor([values])
    assert list(identity.parameters()) == []
    assert torch.equal(identity(x), x)


def test_none_norm_model_has_no_norm_parameters():
    cfg = dict(vocab_size=31, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    with_ln = build_model(ModelConfig(**cfg), PLUGINS)
    without = build_model(ModelConfig(**cfg, norm="none"), PLUGINS)
    # Two norms per block plus the final norm, each with scale and shift of emb_dim.
    assert with_ln.num_params() - without.num_params() == (2 * 2 + 1) * 2 * 16


@pytest.mark.parametrize("name", ["torch-layernorm", "scalenorm"])
@pytest.mark.parametrize("eps", [0.0, -1e-5, math.inf, math.nan])
def test_bad_eps_is_rejected(name, eps):
    with pytest.raises(ComponentError, match=r"eps must be a finite number > 0") as info:
        norm(name, 8, eps=eps)
    assert "\n" not in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("name", ["torch-layernorm", "scalenorm"])
def test_eps_option_is_used(name):
    module = norm(name, 8, eps=1e-3)
    assert module.eps == 1e-3
    with pytest.raises(ComponentError, match="takes no option"):
        norm("none", 8, eps=1e-3)


# ------------------------------------------------------------------------------ dynamic tanh


@settings(max_examples=25, deadline=None)
@given(values=ROWS, alpha=st.floats(0.05, 3.0), seed=st.integers(0, 2**16))
def test_dyt_is_weight_tanh_alpha_x_plus_bias(values, alpha, seed):
    torch.manual_seed(seed)
    dyt = norm("dyt", len(values), alpha_init=alpha)
    with torch.no_grad():
        dyt.weight.uniform_(0.5, 1.5)
        dyt.bias.uniform_(-1, 1)
    x = torch.tensor([values], dtype=torch.float64)
    expected = dyt.weight.double() * torch.tanh(alpha * x) + dyt.bias.double()
    with torch.no_grad():
        torch.testing.assert_close(dyt(x.float()).double(), expected, atol=1e-5, rtol=1e-4)


def test_dyt_learns_its_alpha_and_drops_its_shift_without_biases():
    dyt = norm("dyt", 8)
    assert dyt.alpha.item() == 0.5 and dyt.alpha.shape == ()
    assert sorted(n for n, _ in dyt.named_parameters()) == ["alpha", "bias", "weight"]
    x = torch.randn(4, 8) * 3
    dyt(x).pow(2).sum().backward()
    assert dyt.alpha.grad is not None and dyt.alpha.grad != 0
    # Unlike a norm, it keeps the scale of its input: no statistics over the features.
    small = norm("dyt", 8, alpha_init=1.0)
    tiny = torch.full((1, 8), 1e-3)
    with torch.no_grad():
        torch.testing.assert_close(small(tiny), torch.tanh(tiny), atol=1e-7, rtol=1e-5)
    cfg = dict(vocab_size=31, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    biasless = build_model(ModelConfig(**cfg, norm="dyt", bias=False), PLUGINS)
    assert not any(n.endswith("bias") for n, _ in biasless.named_parameters())
    shifted = build_model(ModelConfig(**cfg, norm="dyt"), PLUGINS)
    # Two norms per block plus the final one, each with weight, bias (emb_dim each) and alpha.
    norms = build_model(ModelConfig(**cfg, norm="none"), PLUGINS).num_params()
    assert shifted.num_params() - norms == (2 * 2 + 1) * (2 * 16 + 1)


@pytest.mark.parametrize("alpha", [0.0, -0.5, math.inf, math.nan])
def test_dyt_rejects_a_bad_alpha_init(alpha):
    with pytest.raises(ComponentError, match=r"'dyt': alpha_init must be a finite number > 0"):
        norm("dyt", 8, alpha_init=alpha)
