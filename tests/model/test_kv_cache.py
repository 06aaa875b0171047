"""The KV cache: generation with and without it gives the same tokens, for every attention that
declares `kv_cache` with every positional scheme and norm placement, past context_length too."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.api.manager import Plugins
from toolkit.inference.generate import generate
from toolkit.model.config import NORM_PLACEMENTS, ModelConfig
from toolkit.model.gpt import build_model

PLUGINS = Plugins(autoload=False)
CACHED = [c.name for c in PLUGINS.registry if c.kind == "attention" and c.facts.get("kv_cache")]
POSITIONAL = PLUGINS.registry.names("positional")
CTX = 8
GREEDY = PLUGINS.registry.get("sampler", "greedy").build()
# Options that make an attention's cache path differ from the plain one.
VARIANTS = {
    "sliding-window": [{"window": 3}, {"window": 1}, {"window": 64}, {"window": 3, "sinks": True}],
    "gqa": [{"n_kv_heads": 2}, {"n_kv_heads": 1, "gate": True}, {"sinks": True}],
    "multihead": [{}, {"qk_norm": True}, {"sinks": True}],
    "sdpa": [{"qk_norm": True}, {"gate": True}],
    "diff": [{"qk_norm": True, "lambda_init": 0.2}],
    "mla": [{}, {"q_rank": 8, "kv_rank": 4, "rope_dim": 2}],
}


def tiny_model(attention, positional: str, placement: str = "pre", seed: int = 0, **extra):
    config = ModelConfig(
        vocab_size=40, context_length=CTX, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.1,
        attention=attention, positional=positional, norm_placement=placement, **extra,
    )  # fmt: skip
    torch.manual_seed(seed)
    return build_model(config, PLUGINS)


def test_the_causal_attentions_declare_kv_cache() -> None:
    for c in PLUGINS.registry:
        if c.kind == "attention":
            assert bool(c.facts.get("kv_cache")) is c.facts["causal"], c.name
    assert set(CACHED) == {
        "causal", "multihead-wrapper", "multihead", "sdpa", "sliding-window", "gqa", "mqa",
        "diff", "mla",
    }  # fmt: skip


ALL = list(itertools.product(CACHED, POSITIONAL, NORM_PLACEMENTS))
# The inner loop's share: every attention with every positional scheme, the placement turning
# with them, so each pair of an attention and a placement comes too (the rest are slow).
QUICK = [
    (att, pos, NORM_PLACEMENTS[(i + j) % len(NORM_PLACEMENTS)])
    for i, att in enumerate(CACHED)
    for j, pos in enumerate(POSITIONAL)
]


@pytest.mark.parametrize(
    ("attention", "positional", "placement"),
    [c if c in QUICK else pytest.param(*c, marks=pytest.mark.slow) for c in ALL],
)
def test_cached_generation_equals_uncached(attention, positional, placement) -> None:
    for i, options in enumerate(VARIANTS.get(attention, [{}])):
        model = tiny_model({"name": attention, **options}, positional, placement, seed=i)
        assert model.supports_kv_cache
        gen = torch.Generator().manual_seed(i)
        short = torch.randint(0, 40, (2, 3), generator=gen)  # crosses context_length while going
        long = torch.randint(0, 40, (2, CTX + 3), generator=gen)  # cropped from the start
        for prompt in (short, long):
            cached = generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=True)
            plain = generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=False)
            assert torch.equal(cached, plain), (attention, options, positional, placement)
        assert model.training  # generate gives the model its mode back


@pytest.mark.parametrize("attention", [a for a in CACHED if a != "mla"])  # mla: its rope_dim
def test_cached_generation_equals_uncached_with_a_partial_rope(attention) -> None:
    rope = {"name": "rope", "fraction": 0.5}  # head_dim 4: one pair turns, one does not
    model = tiny_model(attention, rope, "pre")
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(0))
    cached = generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=True)
    assert torch.equal(cached, generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=False))


@settings(max_examples=25, deadline=None)
@given(
    attention=st.sampled_from(CACHED),
    positional=st.sampled_from(POSITIONAL),
    placement=st.sampled_from(NORM_PLACEMENTS),
    cuts=st.lists(st.integers(1, CTX - 1), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_per_step_logits_match_the_full_forward(attention, positional, placement, cuts, seed):
    """Feeding the ids in chunks (a prefill, then single steps or several at a time) gives the
    logits of one forward over all of them."""
    options = {"window": 3} if attention == "sliding-window" else {}
    model = tiny_model({"name": attention, **options}, positional, placement, seed % 7).eval()
    ids = torch.randint(0, 40, (2, CTX), generator=torch.Generator().manual_seed(seed))
    bounds = [0, *sorted(set(cuts)), CTX]
    cache = model.new_cache()
    with torch.no_grad():
        full = model(ids)
        steps = [model.forward_cached(ids[:, a:b], cache, a) for a, b in itertools.pairwise(bounds)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == CTX


def test_last_only_and_a_refilled_cache() -> None:
    model = tiny_model("multihead", "rope").eval()
    ids = torch.randint(0, 40, (1, 6))
    cache = model.new_cache()
    with torch.no_grad():
        model.forward_cached(ids[:, :5], cache, 0)
        last = model.forward_cached(ids[:, 5:], cache, 5, last_only=True)
        again = model.forward_cached(ids, cache, 0, last_only=True)  # start 0 starts afresh
        full = model(ids)
    assert last.shape == (1, 1, 40)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(again[:, 0], full[:, -1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="holds 6 positions"):
        model.forward_cached(ids[:, :1], cache, 3)


def test_gqa_caches_only_its_key_value_heads() -> None:
    model = tiny_model({"name": "gqa", "n_kv_heads": 1}, "learned").eval()
    cache = model.new_cache()
    with torch.no_grad():
        model.forward_cached(torch.zeros(3, 5, dtype=torch.long), cache, 0)
    k = cache.layers[0]["k"]
    assert k.shape[:2] == (3, 1) and cache.layers[0]["length"] == 5
    wrapper = tiny_model("multihead-wrapper", "alibi").eval()
    cache = wrapper.new_cache()
    with torch.no_grad():
        wrapper.forward_cached(torch.zeros(1, 2, dtype=torch.long), cache, 0)
    assert sorted(cache.layers[1]) == [0, 1, 2, 3]  # one cache per head


@pytest.mark.parametrize("attention", ["self", "simplified"])
def test_attentions_without_the_fact_fall_back_to_the_uncached_path(attention) -> None:
    model = tiny_model(attention, "learned")
    assert not model.supports_kv_cache
    prompt = torch.randint(0, 40, (2, 4))
    cached = generate(model, prompt, CTX, GREEDY, CTX, use_cache=True)
    assert torch.equal(cached, generate(model, prompt, CTX, GREEDY, CTX, use_cache=False))


def test_cache_grows_past_its_first_size_and_follows_sampled_tokens() -> None:
    """A one-token prompt: the cache starts with one position and grows; a seeded sampler draws
    the same tokens with and without it."""
    model = tiny_model("sdpa", "sinusoidal", "sandwich")
    sampler = PLUGINS.registry.get("sampler", "top-k").build(k=5)
    prompt = torch.tensor([[1], [2]])
    a = generate(model, prompt, 3 * CTX, sampler, CTX, torch.Generator().manual_seed(4))
    b = generate(
        model, prompt, 3 * CTX, sampler, CTX, torch.Generator().manual_seed(4), use_cache=False
    )
    assert torch.equal(a, b) and a.shape == (2, 1 + 3 * CTX)


def kv_buffers(cache) -> list[tuple[int, int]]:
    """(data_ptr, positions held) of every buffer in a KV cache (keys and values, or mla's
    latents), in the order the attentions keep them (the wrapper's heads each keep a dict of
    their own)."""
    found = []

    def walk(entries: dict) -> None:
        for value in entries.values():
            if isinstance(value, torch.Tensor):
                found.append((value.data_ptr(), value.shape[-2]))
            elif isinstance(value, dict):
                walk(value)

    for layer in cache.layers:
        walk(layer)
    return found


@pytest.mark.parametrize("attention", CACHED)
def test_the_static_cache_is_allocated_once_and_written_in_place(attention) -> None:
    """The first fill allocates context_length positions; single steps up to context_length and
    a refill from position 0 then write into the same memory."""
    model = tiny_model(attention, "rope").eval()
    ids = torch.randint(0, 40, (2, CTX))
    cache = model.new_cache()
    with torch.no_grad():
        model.forward_cached(ids[:, :3], cache, 0)
        first = kv_buffers(cache)
        assert first and {positions for _, positions in first} == {CTX}
        for p in range(3, CTX):
            model.forward_cached(ids[:, p : p + 1], cache, p)
            assert kv_buffers(cache) == first, f"reallocated at position {p}"
        model.forward_cached(ids[:, 1:], cache, 0)  # the window moved on: refill
    assert kv_buffers(cache) == first and cache.length == CTX - 1


def test_a_mixture_of_experts_model_generates_the_same_with_the_cache() -> None:
    """The experts are the feed-forward, per position: the cached path runs them unchanged."""
    moe = {"name": "moe", "n_experts": 4, "top_k": 2}
    model = tiny_model("gqa", "alibi", "parallel", activation=moe)
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=True)
    assert torch.equal(cached, generate(model, prompt, 2 * CTX, GREEDY, CTX, use_cache=False))
