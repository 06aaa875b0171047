from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ComponentError
from toolkit.generate import generate
from toolkit.plugins import Plugins

PLUGINS = Plugins(autoload=False)
logits_strategy = st.lists(st.floats(-20, 20), min_size=2, max_size=40)


def build(name: str, **options):
    return PLUGINS.registry.get("sampler", name).build(**options)


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
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        token = build("top-k", k=k)(logits, g).item()
        assert logits[0, token].item() in allowed


@settings(max_examples=30, deadline=None)
@given(logits_strategy, st.integers(0, 2**16))
def test_temperature_zero_is_greedy_and_samples_are_valid_ids(values, seed):
    logits = torch.tensor([values, values])
    g = torch.Generator().manual_seed(seed)
    ids = build("temperature", temperature=0.0)(logits, g)
    assert ids.shape == (2, 1) and ids[0].item() == int(torch.argmax(logits[0]))
    drawn = build("temperature", temperature=1.0)(logits, g)
    assert ((drawn >= 0) & (drawn < len(values))).all()


def test_same_seed_same_draws():
    logits = torch.randn(4, 30)
    a = build("top-k", k=10)(logits, torch.Generator().manual_seed(3))
    b = build("top-k", k=10)(logits, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "message"), [({"k": 0}, "at least 1"), ({"temperature": -1.0}, ">= 0")]
)
def test_bad_sampler_options(options, message):
    with pytest.raises(ComponentError, match=message):
        build("top-k", **options)


def test_generate_crops_context_and_stops_at_eot():
    class Echo(torch.nn.Module):
        """Predicts (last id + 1) mod 10; fails if given more than 4 positions."""

        def forward(self, idx):
            assert idx.shape[1] <= 4
            return torch.nn.functional.one_hot((idx + 1) % 10, 10).float() * 10

    out = generate(Echo(), torch.tensor([[0]]), 20, build("greedy"), context_length=4, eot_id=5)
    assert out[0].tolist() == [0, 1, 2, 3, 4, 5]
