"""Positional schemes against their formulas: the sinusoidal table, RoPE as complex
multiplication (norm-preserving, relative), ALiBi's slopes and biases; `none`; and the start
offsets a KV cache will use, checked against slices of a longer sequence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.api.manager import Plugins
from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import count_params
from toolkit.testing import check_component

PLUGINS = Plugins(autoload=False)
CFG = ModelConfig(
    vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=1, drop_rate=0.0
)
NEW = ["sinusoidal", "rope", "alibi", "none"]


def positional(name: str, config: ModelConfig = CFG, **options):
    return PLUGINS.registry.get("positional", name).build(config, **options)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**{**CFG.to_dict(), **overrides})


def test_names_facts_options_and_no_parameters():
    assert set(NEW) | {"learned"} <= set(PLUGINS.registry.names("positional"))
    for name in NEW:
        c = PLUGINS.registry.get("positional", name)
        assert c.plugin == "plugins.positional"
        assert c.description and "\n" not in c.description and not c.description.endswith(".")
        assert bool(c.facts.get("inside_attention")) is (name in ("rope", "alibi"))
        module = positional(name)
        assert list(module.parameters()) == []
        assert module.state_dict() == {}  # tables are derived: not saved
    assert set(PLUGINS.registry.get("positional", "rope").options) == {"theta", "fraction"}
    assert PLUGINS.registry.get("positional", "rope").options["theta"].default == 10000.0
    assert PLUGINS.registry.get("positional", "rope").options["fraction"].default == 1.0
    for name in ("sinusoidal", "alibi", "none"):
        assert PLUGINS.registry.get("positional", name).options == {}


@pytest.mark.parametrize("name", ["rope", "alibi", "none"])
def test_schemes_not_on_the_embeddings_leave_them_alone(name):
    x = torch.randn(2, 5, CFG.emb_dim)
    assert torch.equal(positional(name)(x), x)
    assert torch.equal(positional(name)(x, start=30), x)


# -------------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("emb_dim", [16, 7])
def test_sinusoidal_is_vaswanis_formula(emb_dim):
    pe = positional("sinusoidal", config(emb_dim=emb_dim, n_heads=1))
    x = torch.zeros(1, CFG.context_length + 5, emb_dim)
    out = pe(x)[0]  # past context_length too: computed on demand
    for pos in range(out.shape[0]):
        for i in range(emb_dim):
            angle = pos / 10000 ** (2 * (i // 2) / emb_dim)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert out[pos, i].item() == pytest.approx(expected, abs=1e-5)
    y = torch.randn(2, 4, emb_dim)
    torch.testing.assert_close(pe(y) - y, out[:4].expand(2, 4, emb_dim))


# -------------------------------------------------------------------------------------- rope


def complex_rope(x: torch.Tensor, start: int, theta: float = 10000.0) -> torch.Tensor:
    """Pairs (2i, 2i+1) as complex numbers times exp(i pos theta^(-2i/d)), in float64."""
    *_, t, d = x.shape
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    pos = torch.arange(start, start + t, dtype=torch.float64)
    freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turned = z * torch.polar(torch.ones(t, d // 2, dtype=torch.float64), torch.outer(pos, freq))
    return torch.view_as_real(turned).reshape(x.shape).float()


@pytest.mark.parametrize("theta", [10000.0, 500.0])
@pytest.mark.parametrize("start", [0, 5, 40])  # inside and past the cached context_length
def test_rope_is_complex_multiplication(start, theta):
    rope = positional("rope", theta=theta)
    q, k = torch.randn(2, CFG.n_heads, 6, CFG.head_dim), torch.randn(2, 1, 6, CFG.head_dim)
    rq, rk = rope.rotate(q, k, start=start)
    torch.testing.assert_close(rq, complex_rope(q, start, theta), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rk, complex_rope(k, start, theta), atol=1e-5, rtol=1e-4)
    assert rope.score_bias(6, 6, start) is None


def test_rope_turns_any_even_width_a_single_head_attention_gives_it():
    rope = positional("rope")
    q = torch.randn(1, 1, 5, CFG.emb_dim)  # `causal`: one head spanning emb_dim
    torch.testing.assert_close(rope.rotate(q, q, 3)[0], complex_rope(q, 3), atol=1e-5, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(start=st.integers(0, 100), t=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_rope_preserves_norms(start, t, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, CFG.n_heads, t, CFG.head_dim, generator=gen)
    rq, rk = positional("rope").rotate(q, q * 2, start=start)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(rk.norm(dim=-1), 2 * q.norm(dim=-1))


@settings(max_examples=50, deadline=None)
@given(
    m=st.integers(0, 60),
    n=st.integers(0, 60),
    shift=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_rope_dot_products_depend_only_on_relative_position(m, n, shift, seed):
    rope = positional("rope")
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, CFG.head_dim, generator=gen)

    def score(i: int, j: int) -> float:
        return (rope.rotate(q, q, start=i)[0] * rope.rotate(k, k, start=j)[1]).sum().item()

    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4, rel=1e-4)


def test_rope_refuses_odd_head_dims_and_bad_theta():
    with pytest.raises(ComponentError, match=r"head_dim = emb_dim / n_heads = 12 / 4 = 3 is odd"):
        positional("rope", config(emb_dim=12))
    with pytest.raises(ComponentError, match="theta must be > 0"):
        positional("rope", theta=0.0)
    with pytest.raises(ComponentError, match="must be a number"):
        positional("rope", theta="big")


@pytest.mark.parametrize("start", [0, 5, 40])
@pytest.mark.parametrize(("fraction", "turned"), [(0.5, 2), (0.75, 2), (0.6, 2)])
def test_partial_rope_turns_the_first_pairs_over_their_own_frequencies(start, fraction, turned):
    """fraction x head_dim (4 here) rounded down to pairs turns, as a rope of that width would;
    the rest passes through untouched."""
    rope = positional("rope", fraction=fraction)
    q = torch.randn(2, CFG.n_heads, 6, CFG.head_dim)
    rq, _ = rope.rotate(q, q, start=start)
    torch.testing.assert_close(rq[..., :turned], complex_rope(q[..., :turned], start))
    assert torch.equal(rq[..., turned:], q[..., turned:])
    wide = torch.randn(1, 1, 5, 16)  # a single head spanning emb_dim: 16 x 0.6 -> 8 turn
    out = positional("rope", fraction=0.6).rotate(wide, wide, start=start)[0]
    torch.testing.assert_close(out[..., :8], complex_rope(wide[..., :8], start))
    assert torch.equal(out[..., 8:], wide[..., 8:])


def test_rope_at_fraction_one_is_rope_bit_for_bit():
    q = torch.randn(2, CFG.n_heads, 7, CFG.head_dim)
    whole = positional("rope").rotate(q, q, start=3)[0]
    assert torch.equal(positional("rope", fraction=1.0).rotate(q, q, start=3)[0], whole)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(0, 60),
    n=st.integers(0, 60),
    shift=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_partial_rope_dot_products_still_depend_only_on_relative_position(m, n, shift, seed):
    rope = positional("rope", config(emb_dim=32, n_heads=2), fraction=0.5)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, 16, generator=gen)

    def score(i: int, j: int) -> float:
        return (rope.rotate(q, q, start=i)[0] * rope.rotate(k, k, start=j)[1]).sum().item()

    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4, rel=1e-4)


def test_partial_rope_refuses_fractions_that_turn_nothing_or_too_much():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ComponentError, match=r"fraction .* must be in \(0, 1\], got"):
            positional("rope", fraction=bad)
    with pytest.raises(ComponentError, match="turns no pair of dimensions; raise the fraction"):
        positional("rope", fraction=0.4)  # 0.4 x head_dim 4 = 1.6 -> no pair
    # An odd head_dim is fine when a fraction leaves its last dimension out.
    assert positional("rope", config(emb_dim=20, n_heads=4), fraction=0.8).rotated(5) == 4


# ------------------------------------------------------------------------------------- alibi


def test_alibi_slopes_follow_press_et_al():
    slopes = positional("alibi", config(n_heads=8)).slopes
    torch.testing.assert_close(slopes, torch.tensor([2.0**-i for i in range(1, 9)]))
    four = positional("alibi", config(n_heads=4)).slopes
    torch.testing.assert_close(four, torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    # Not a power of two: the 4-head slopes, then every other of the 8-head ones.
    six = positional("alibi", config(n_heads=6, emb_dim=12)).slopes
    torch.testing.assert_close(six, torch.tensor([2.0**-e for e in (2, 4, 6, 8, 1, 3)]))
    assert positional("alibi", config(n_heads=1, emb_dim=16)).slopes.tolist() == [2.0**-8]


def test_alibi_bias_is_minus_slope_times_distance():
    alibi = positional("alibi", config(n_heads=8, emb_dim=16))
    bias = alibi.score_bias(7, 7)
    assert bias.shape == (8, 7, 7)
    for h in range(8):
        for i in range(7):
            for j in range(i + 1):  # past and present keys; the future is masked anyway
                assert bias[h, i, j].item() == pytest.approx(-(2.0 ** -(h + 1)) * (i - j))
    q, k = torch.randn(1, 8, 7, 2), torch.randn(1, 8, 7, 2)
    assert alibi.rotate(q, k, 3) == (q, k)


# ----------------------------------------------------------------------------- start offsets


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 30), t=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_offsets_equal_slices_of_a_longer_sequence(start, t, seed):
    # Sequences up to 42 long: past the cached 12 positions as well as inside them.
    total = start + t
    gen = torch.Generator().manual_seed(seed)
    rope = positional("rope")
    q = torch.randn(1, CFG.n_heads, total, CFG.head_dim, generator=gen)
    k = torch.randn(1, 2, total, CFG.head_dim, generator=gen)
    full_q, full_k = rope.rotate(q, k, start=0)
    part_q, part_k = rope.rotate(q[:, :, start:], k[:, :, start:], start=start)
    torch.testing.assert_close(part_q, full_q[:, :, start:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part_k, full_k[:, :, start:], atol=1e-5, rtol=1e-5)

    # ALiBi: the new queries' rows against every key so far (a KV cache's shape).
    alibi = positional("alibi")
    torch.testing.assert_close(
        alibi.score_bias(t, total, start=start), alibi.score_bias(total, total)[:, start:]
    )

    sinusoidal = positional("sinusoidal")
    x = torch.randn(2, total, CFG.emb_dim, generator=gen)
    torch.testing.assert_close(sinusoidal(x[:, start:], start=start), sinusoidal(x)[:, start:])

    if total <= CFG.context_length:  # learned positions end at context_length
        learned = positional("learned")
        torch.testing.assert_close(learned(x[:, start:], start=start), learned(x)[:, start:])


def test_every_positional_counts_parameters_on_the_meta_device():
    for name in [*NEW, "learned"]:
        total, non_embedding = count_params(config(positional=name), PLUGINS)
        assert total > non_embedding > 0
    learned, _ = count_params(config(positional="learned"), PLUGINS)
    none, _ = count_params(config(positional="none"), PLUGINS)
    assert learned - none == CFG.context_length * CFG.emb_dim


def test_partial_rope_conforms_and_reads_any_length():
    check_component("positional", "rope", PLUGINS, options={"fraction": 0.5}, max_examples=20)
    assert PLUGINS.registry.get("positional", "rope").facts["any_length"] is True
    assert "any_length" not in PLUGINS.registry.get("positional", "learned").facts
