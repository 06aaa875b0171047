"""match_params: a variant as big as its baseline, by the width of its feed-forward."""

from __future__ import annotations

import pytest

from toolkit.errors import SpecError
from toolkit.model.gpt import count_params
from toolkit.spec.parse import parse_spec


def non_embedding(run) -> int:
    return count_params(run.model_config(257))[1]


def slope(run) -> float:
    """Non-embedding parameters per hidden unit of the feed-forward, over all layers."""
    return run.model.n_layers * (2 * run.model.emb_dim + 1)


def test_a_bigger_variant_gets_a_narrower_feed_forward(tiny_doc) -> None:
    tiny_doc["match_params"] = True
    tiny_doc["variants"] = [
        {"name": "base"},
        {"name": "qkv-bias", "model": {"qkv_bias": True, "tie_embeddings": False}},
        {"name": "swiglu", "model": {"activation": "swiglu"}},
        {"name": "own-width", "model": {"ffn_hidden": 40, "qkv_bias": True}},
    ]
    spec = parse_spec(tiny_doc)
    runs = {r.variant: r for r in spec.runs}
    target = non_embedding(runs["base"])
    bigger = runs["qkv-bias"]
    assert bigger.model.ffn_hidden is not None and bigger.model.ffn_hidden < 4 * 32
    assert abs(non_embedding(bigger) - target) <= slope(bigger) / 2
    # The gated unit matches already at 8d/3; a width set by hand is kept.
    assert runs["swiglu"].model.ffn_hidden is None
    assert runs["own-width"].model.ffn_hidden == 40
    assert any(n.startswith("match_params: qkv-bias gets model.ffn_hidden = ") for n in spec.notes)
    # Without the key, nothing changes.
    tiny_doc.pop("match_params")
    assert {r.variant: r.model.ffn_hidden for r in parse_spec(tiny_doc).runs}["qkv-bias"] is None


def test_a_variant_too_big_to_match_is_an_error(tiny_doc) -> None:
    tiny_doc["match_params"] = True
    tiny_doc["variants"] = [{"name": "base"}, {"name": "deep", "model": {"n_layers": 4}}]
    with pytest.raises(SpecError, match="even the narrowest feed-forward leaves it larger"):
        parse_spec(tiny_doc)


def test_a_feed_forward_that_ignores_the_width_is_an_error(tiny_doc) -> None:
    tiny_doc["match_params"] = True
    tiny_doc["variants"] = [
        {"name": "base"},
        {"name": "fixed", "model": {"activation": {"name": "swiglu", "hidden_mult": 3.0}}},
    ]
    with pytest.raises(SpecError, match=r"ignores model\.ffn_hidden"):
        parse_spec(tiny_doc)


def test_on_a_ladder_each_size_matches_the_baseline_at_that_size(tiny_doc) -> None:
    tiny_doc["match_params"] = True
    tiny_doc["variants"] = [{"name": "base"}, {"name": "bias", "model": {"qkv_bias": True}}]
    tiny_doc["ladder"] = {
        "sizes": [
            {"emb_dim": 32, "n_layers": 1, "n_heads": 2},
            {"emb_dim": 64, "n_layers": 2, "n_heads": 2},
        ],
        "tokens": 512,
    }
    runs = {r.variant: r for r in parse_spec(tiny_doc).runs}
    for size in ("d32-L1-h2", "d64-L2-h2"):
        mine, theirs = runs[f"bias@{size}"], runs[f"base@{size}"]
        assert abs(non_embedding(mine) - non_embedding(theirs)) <= slope(mine) / 2
