"""Feed-forward blocks against reference formulas: the plain ones' activations (erf GELU via
math.erf, squared ReLU, SiLU) and the gated ones (SwiGLU, GEGLU) recomputed from their own
weights; hidden sizes and parameter counts; option checks; registration."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.api.manager import Plugins
from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig

PLUGINS = Plugins(autoload=False)
CFG = ModelConfig(vocab_size=61, context_length=12, emb_dim=16, n_heads=4, n_layers=1)
PLAIN = ["gelu-exact", "relu2", "silu"]
GATED = ["swiglu", "geglu"]


def ff(name: str, config: ModelConfig = CFG, **options):
    return PLUGINS.registry.get("activation", name).build(config, **options)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def erf_gelu(v: float) -> float:
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


REFERENCE = {
    "gelu-exact": erf_gelu,
    "relu2": lambda v: max(v, 0.0) ** 2,
    "silu": lambda v: v * sigmoid(v),
}


def test_every_activation_is_registered():
    names = set(PLUGINS.registry.names("activation"))
    assert {"gelu", "relu", *PLAIN, *GATED} <= names
    for name in PLAIN + GATED:
        component = PLUGINS.registry.get("activation", name)
        assert component.plugin == "plugins.activations"
        assert component.description and "\n" not in component.description
    for name in GATED:
        options = PLUGINS.registry.get("activation", name).options
        assert options["match_params"].default is True and options["hidden_mult"].default is None


@pytest.mark.parametrize("name", PLAIN)
def test_plain_blocks_keep_the_books_layout(name):
    block = ff(name)
    assert [type(m).__name__ for m in block.layers][0::2] == ["Linear", "Linear"]
    assert block.layers[0].in_features == CFG.emb_dim
    assert block.layers[0].out_features == block.layers[2].in_features == 4 * CFG.emb_dim
    assert n_params(block) == n_params(ff("gelu"))
    assert set(block.state_dict()) == {
        f"layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }


@pytest.mark.parametrize("name", PLAIN)
@settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(-20, 20), min_size=1, max_size=32))
def test_plain_activation_is_its_formula(name, values):
    act = ff(name).layers[1]
    x = torch.tensor(values, dtype=torch.float64)
    expected = torch.tensor([REFERENCE[name](v) for v in values], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(act(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(act(x.float()).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PLAIN)
def test_plain_block_is_down_act_up(name):
    torch.manual_seed(0)
    block = ff(name).double()
    x = torch.randn(2, 3, CFG.emb_dim, dtype=torch.float64)
    up, down = block.layers[0], block.layers[2]
    h = x @ up.weight.T + up.bias
    h = torch.tensor([REFERENCE[name](v) for v in h.flatten().tolist()], dtype=torch.float64)
    expected = h.view(2, 3, -1) @ down.weight.T + down.bias
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_gelu_exact_differs_from_the_tanh_approximation():
    x = torch.linspace(-4, 4, 81)
    exact, approx = ff("gelu-exact").layers[1](x), ff("gelu").layers[1](x)
    assert 1e-5 < (exact - approx).abs().max() < 1e-2


GATE_REFERENCE = {"swiglu": lambda v: v * sigmoid(v), "geglu": erf_gelu}


@pytest.mark.parametrize("name", GATED)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 5))
def test_gated_block_is_down_of_act_gate_times_up(name, seed, scale):
    torch.manual_seed(seed)
    block = ff(name).double()
    x = torch.randn(2, 3, CFG.emb_dim, dtype=torch.float64) * scale
    with torch.no_grad():
        gate = x @ block.gate.weight.T + block.gate.bias
        up = x @ block.up.weight.T + block.up.bias
        act = torch.tensor([GATE_REFERENCE[name](v) for v in gate.flatten().tolist()])
        expected = (act.view_as(gate) * up) @ block.down.weight.T + block.down.bias
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", GATED)
def test_gated_layout_and_biases(name):
    block = ff(name)
    assert set(block.state_dict()) == {
        f"{layer}.{p}" for layer in ("gate", "up", "down") for p in ("weight", "bias")
    }
    hidden = 8 * CFG.emb_dim // 3
    assert block.gate.weight.shape == block.up.weight.shape == (hidden, CFG.emb_dim)
    assert block.down.weight.shape == (CFG.emb_dim, hidden)


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("emb_dim", [32, 64, 128, 768])
def test_matched_gated_blocks_have_the_plain_blocks_parameters(name, emb_dim):
    config = ModelConfig(emb_dim=emb_dim, n_heads=1)
    with torch.device("meta"):
        plain, gated = ff("gelu", config), ff(name, config)
        wide = ff(name, config, match_params=False)
    assert gated.gate.out_features == int(2 * 4 * emb_dim / 3)
    assert abs(n_params(gated) - n_params(plain)) / n_params(plain) < 0.01
    assert wide.gate.out_features == wide.up.out_features == wide.down.in_features == 4 * emb_dim
    assert n_params(wide) > 1.4 * n_params(plain)


@pytest.mark.parametrize("name", GATED)
def test_hidden_mult_overrides_match_params(name):
    for match_params in (True, False):
        block = ff(name, hidden_mult=2.5, match_params=match_params)
        assert block.gate.out_features == round(2.5 * CFG.emb_dim) == 40
    assert ff(name, hidden_mult=3).up.out_features == 48  # an integer works as the float
    assert ff(name, hidden_mult=0.04).down.in_features == 1  # round(0.64): one unit at least


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize(
    ("hidden_mult", "message"),
    [
        (0, r"hidden_mult must be a finite number > 0, got 0\.0"),
        (-1.5, r"hidden_mult must be a finite number > 0"),
        (math.inf, r"hidden_mult must be a finite number > 0"),
        (math.nan, r"hidden_mult must be a finite number > 0"),
        (0.01, r"gives no hidden units at emb_dim 16; use at least 1/emb_dim = 0\.0625"),
    ],
)
def test_bad_hidden_mult_is_rejected(name, hidden_mult, message):
    with pytest.raises(ComponentError, match=message) as info:
        ff(name, hidden_mult=hidden_mult)
    assert "\n" not in str(info.value) and repr(name) in str(info.value)


@pytest.mark.parametrize("name", GATED)
def test_mistyped_options_are_rejected(name):
    with pytest.raises(ComponentError, match="match_params' must be true or false"):
        ff(name, match_params=1)
    for bad in ("3", True, [3]):
        with pytest.raises(ComponentError, match=r"hidden_mult.* must be a .*number"):
            ff(name, hidden_mult=bad)
    with pytest.raises(ComponentError, match="takes no option 'hidden'"):
        ff(name, hidden=12)
