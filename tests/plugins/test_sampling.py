from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plugins.sampling import TEMPERATURE_RANGE
from toolkit.api.manager import Plugins
from toolkit.errors import ComponentError
from toolkit.inference.generate import generate

PLUGINS = Plugins(autoload=False)
SAMPLERS = PLUGINS.registry.names("sampler")
logits_strategy = st.lists(st.floats(-20, 20), min_size=2, max_size=40)
p_strategy = st.floats(0.01, 1.0)
TOL = 1e-5


def build(name: str, **options):
    return PLUGINS.registry.get("sampler", name).build(**options)


def most(values: torch.Tensor, empty: float = 0.0) -> float:
    return values.max().item() if values.numel() else empty


def least(values: torch.Tensor, empty: float = float("inf")) -> float:
    return values.min().item() if values.numel() else empty


def draws(sampler, logits: torch.Tensor, seed: int, n: int = 5) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [sampler(logits, g).flatten().tolist() for _ in range(n)]


def test_registered_samplers_and_options():
    assert set(SAMPLERS) >= {"greedy", "temperature", "top-k", "top-p", "min-p", "typical", "chain"}
    for name in ("top-p", "min-p", "typical"):
        assert set(PLUGINS.registry.get("sampler", name).options) == {"p", "temperature"}
    chain = PLUGINS.registry.get("sampler", "chain").options
    assert set(chain) == {"top_k", "top_p", "min_p", "typical_p", "temperature", "order"}
    assert chain["order"].default[:4] == ["top_k", "temperature", "top_p", "min_p"]


@settings(max_examples=50, deadline=None)
@given(logits_strategy)
def test_greedy_is_argmax(values):
    logits = torch.tensor([values])
    assert build("greedy")(logits).item() == int(torch.argmax(logits))


@settings(max_examples=50, deadline=None)
@given(logits_strategy, st.integers(1, 5), st.integers(0, 2**16))
def test_top_k_never_draws_outside_the_k_most_likely(values, k, seed):
    logits = torch.tensor([values])
    allowed = set(torch.topk(logits, min(k, len(values))).values[0].tolist())
    for (token,) in draws(build("top-k", k=k), logits, seed):
        assert logits[0, token].item() in allowed


@settings(max_examples=60, deadline=None)
@given(logits_strategy, p_strategy, st.integers(0, 2**16))
def test_top_p_keeps_the_smallest_set_reaching_p(values, p, seed):
    logits = torch.tensor([values])
    sampler = build("top-p", p=p)
    probs = torch.softmax(logits, -1)[0]
    kept = sampler.probs(logits)[0] > 0
    # The kept tokens are the most likely ones, reach p, and would not without the least one.
    assert least(probs[kept]) >= most(probs[~kept]) - TOL
    assert probs[kept].sum() >= p - TOL
    assert probs[kept].sum() - probs[kept].min() < p + TOL
    for (token,) in draws(sampler, logits, seed):
        assert probs[probs > probs[token]].sum() < p + TOL  # the mass ranked above it is < p


@settings(max_examples=60, deadline=None)
@given(logits_strategy, p_strategy, st.integers(0, 2**16))
def test_min_p_never_draws_below_its_threshold(values, p, seed):
    logits = torch.tensor([values])
    sampler = build("min-p", p=p)
    probs = torch.softmax(logits, -1)[0]
    threshold = p * probs.max()
    for (token,) in draws(sampler, logits, seed):
        assert probs[token] >= threshold * (1 - TOL)
    kept = sampler.probs(logits)[0] > 0
    assert (probs[~kept] < threshold * (1 + TOL)).all()


@settings(max_examples=60, deadline=None)
@given(logits_strategy, p_strategy, st.integers(0, 2**16))
def test_typical_keeps_the_tokens_closest_to_the_entropy(values, p, seed):
    logits = torch.tensor([values], dtype=torch.float64)
    sampler = build("typical", p=p)
    logp = torch.log_softmax(logits, -1)[0]
    probs = logp.exp()
    deviation = (-logp - (-(probs * logp).sum())).abs()
    kept = sampler.probs(logits)[0] > 0
    assert most(deviation[kept]) <= least(deviation[~kept]) + 1e-4
    assert probs[kept].sum() >= p - 1e-4  # the typical set reaches p ...
    # ... and is the smallest in that order to do so: without the last one it would not.
    last = kept & (deviation >= most(deviation[kept]) - 1e-4)
    assert probs[kept].sum() - most(probs[last]) < p + 1e-4
    for (token,) in draws(sampler, logits, seed):
        assert kept[token]


@settings(max_examples=40, deadline=None)
@given(logits_strategy, st.integers(0, 2**16))
def test_temperature_towards_zero_converges_to_greedy(values, seed):
    logits = torch.tensor([values])
    top2 = torch.topk(logits[0], 2).values
    assume(top2[0] - top2[1] > 0.05)
    best = int(logits.argmax())
    mass = [build("temperature", temperature=t).probs(logits)[0, best] for t in (2, 1, 0.1, 1e-3)]
    assert all(a <= b + TOL for a, b in itertools.pairwise(mass))
    assert mass[-1] > 0.999
    for name in ("temperature", "top-k", "top-p", "min-p", "typical", "chain"):
        sampler = build(name, temperature=0.0)
        assert draws(sampler, logits, seed, n=2) == [[best], [best]]
        assert sampler.probs(logits)[0, best] == 1


@pytest.mark.parametrize("name", SAMPLERS)
@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(logits_strategy.filter(lambda v: len(v) == 12), min_size=1, max_size=3),
    scale=st.sampled_from((0.01, 1.0, 100.0)),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_every_sampler_gives_valid_ids_a_distribution_and_replays(name, rows, scale, seed):
    logits = torch.tensor(rows) * scale
    given_logits = logits.clone()
    sampler = build(name)
    ids = sampler(logits, torch.Generator().manual_seed(seed))
    assert ids.shape == (len(rows), 1) and ids.dtype == torch.int64
    assert ((ids >= 0) & (ids < 12)).all()
    probs = sampler.probs(logits)
    assert probs.shape == logits.shape and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(rows)))
    assert (probs.gather(1, ids) > 0).all()  # drawn from the distribution it reports
    assert torch.equal(logits, given_logits)  # nothing changed in place
    assert torch.equal(ids, sampler(logits, torch.Generator().manual_seed(seed)))


def test_same_seed_same_draws():
    logits = torch.randn(4, 30)
    for name in SAMPLERS:
        a = build(name)(logits, torch.Generator().manual_seed(3))
        b = build(name)(logits, torch.Generator().manual_seed(3))
        assert torch.equal(a, b), name


@settings(max_examples=30, deadline=None)
@given(logits_strategy, st.integers(1, 6), st.floats(0.1, 3.0), st.integers(0, 2**16))
def test_chain_in_the_books_order_is_top_k_then_temperature(values, k, t, seed):
    logits = torch.tensor([values, values[::-1]])
    chain = build("chain", top_k=k, temperature=t, order=["top_k", "temperature"])
    top_k = build("top-k", k=k, temperature=t)
    assert torch.equal(chain.probs(logits), top_k.probs(logits))
    assert draws(chain, logits, seed) == draws(top_k, logits, seed)
    # Each single sampler is the chain with its one filter, in the default order.
    for name, option in (("top-p", "top_p"), ("min-p", "min_p"), ("typical", "typical_p")):
        single = build(name, p=0.7, temperature=t)
        chained = build("chain", **{option: 0.7}, temperature=t)
        assert torch.equal(single.probs(logits), chained.probs(logits))


def test_chain_applies_its_filters_in_the_order_given():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    # min-p 0.5 at temperature 1 keeps logits within log(2) of the best: only the first. After
    # temperature 5 the logits are 0.8, 0.6, 0.4, 0.2, 0 and min-p keeps four.
    before = build("chain", min_p=0.5, temperature=5.0, order=["min_p", "temperature"])
    after = build("chain", min_p=0.5, temperature=5.0, order=["temperature", "min_p"])
    assert (before.probs(logits) > 0).sum() == 1
    assert (after.probs(logits) > 0).sum() == 4
    both = build("chain", top_k=3, top_p=0.99, min_p=0.01)
    assert (both.probs(logits) > 0).sum() == 3  # top-k caps what the others keep


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("top-k", {"k": 0}, "option k must be at least 1"),
        ("top-k", {"temperature": -1.0}, r"temperature must be 0 \(greedy\) or a number from"),
        ("top-p", {"p": 0.0}, r"'top-p' option p must be in \(0, 1\]"),
        ("top-p", {"p": 1.5}, r"must be in \(0, 1\]"),
        ("min-p", {"p": -0.1}, r"must be in \(0, 1\]"),
        ("typical", {"p": 2.0}, r"must be in \(0, 1\]"),
        ("typical", {"temperature": -0.5}, r"must be 0 \(greedy\) or a number from"),
        ("chain", {"top_k": 0}, "option top_k must be at least 1"),
        ("chain", {"top_p": 1.01}, "option top_p must be in"),
        ("chain", {"order": ["top_k", "top_q"]}, "unknown filter 'top_q'"),
        ("chain", {"order": ["top_k", "top_k"]}, "'top_k' appears twice"),
        ("chain", {"min_p": 0.1, "order": ["top_k"]}, "min_p is set but"),
        ("chain", {"temperature": 0.5, "order": ["top_p"]}, "temperature is set but"),
        ("top-p", {"q": 0.5}, "takes no option 'q'"),
    ],
)
def test_bad_sampler_options(name, options, message):
    with pytest.raises(ComponentError, match=message) as info:
        build(name, **options)
    assert "\n" not in str(info.value)


BAD_TEMPERATURES = [math.inf, -math.inf, math.nan, 1e-40, 5e-324, 1e39, 1e300]


@pytest.mark.parametrize("t", BAD_TEMPERATURES, ids=str)
@pytest.mark.parametrize("name", ["temperature", "top-k", "top-p", "min-p", "typical", "chain"])
def test_temperatures_the_float32_division_cannot_take_are_refused(name, t):
    """Infinite, NaN and out-of-float32 temperatures made NaN probabilities at the first draw
    (`RuntimeError: probability tensor contains either inf, nan or element < 0`), after
    training; now the sampler is not built."""
    with pytest.raises(ComponentError, match=r"must be 0 \(greedy\) or a number from") as info:
        build(name, temperature=t)
    assert "\n" not in str(info.value) and f"got {t}" in str(info.value)


@pytest.mark.parametrize("t", [*TEMPERATURE_RANGE, 1e-30, 1e30])
@pytest.mark.parametrize("name", ["temperature", "top-k", "top-p", "min-p", "typical", "chain"])
def test_temperatures_at_the_ends_of_the_range_draw_from_a_distribution(name, t):
    """Logits of a large model's size, some filtered to -inf: at the smallest temperature the
    draw is the argmax, at the largest uniform over what the filters kept; never NaN."""
    logits = torch.tensor([[30.0, -45.0, 12.5, -3.0, 0.0, 7.0], [-80.0, 80.0, 79.0, 0.0, 1.0, 2.0]])
    options = {"top_k": 3} if name == "chain" else {"k": 3} if name == "top-k" else {}
    sampler = build(name, temperature=t, **options)
    probs = sampler.probs(logits)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    ids = sampler(logits, torch.Generator().manual_seed(0))
    assert (probs.gather(1, ids) > 0).all()
    if t < 1:
        assert ids.flatten().tolist() == [0, 1]


def test_generate_crops_context_and_stops_at_eot():
    class Echo(torch.nn.Module):
        """Predicts (last id + 1) mod 10; fails if given more than 4 positions."""

        def forward(self, idx):
            assert idx.shape[1] <= 4
            return torch.nn.functional.one_hot((idx + 1) % 10, 10).float() * 10

    out = generate(Echo(), torch.tensor([[0]]), 20, build("greedy"), context_length=4, eot_id=5)
    assert out[0].tolist() == [0, 1, 2, 3, 4, 5]
