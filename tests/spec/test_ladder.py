"""[ladder]: every variant at several sizes, each size with its own token budget."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import SpecError
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import count_params
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

SIZES = [
    {"emb_dim": 16, "n_layers": 1, "n_heads": 2},
    "nano",  # emb_dim 64, 2 layers, 2 heads (its context length is not taken)
    {"emb_dim": 32, "n_layers": 1, "n_heads": 2},
]


@pytest.fixture
def ladder_doc(tiny_doc) -> dict:
    tiny_doc["grid"] = {"model.activation": ["gelu", "relu"]}
    tiny_doc["ladder"] = {"sizes": SIZES, "tokens": [640, 1280, 768]}
    return tiny_doc


def test_every_variant_at_every_size_smallest_first(ladder_doc) -> None:
    spec = parse_spec(ladder_doc)
    names = [v.name for v in spec.variants]
    assert names == [
        f"activation={a}@{s}" for s in ("d16-L1-h2", "d32-L1-h2", "nano") for a in ("gelu", "relu")
    ]
    assert spec.baseline == "activation=gelu@nano"
    by_name = {r.variant: r for r in spec.runs}
    nano = by_name["activation=relu@nano"]
    assert (nano.model.emb_dim, nano.model.n_layers, nano.model.context_length) == (64, 2, 32)
    assert nano.train.max_tokens == 1280 and nano.train.max_steps is None
    assert by_name["activation=gelu@d32-L1-h2"].train.max_tokens == 768  # kept with its size


def test_tokens_per_param_budgets_follow_the_baseline_at_each_size(ladder_doc) -> None:
    ladder_doc["ladder"] = {"sizes": SIZES[:2], "tokens_per_param": 2}
    spec = parse_spec(ladder_doc)
    for r in spec.runs:
        config = ModelConfig.from_dict(
            {"vocab_size": 257, "context_length": 32, "n_heads": 2,
             "emb_dim": r.model.emb_dim, "n_layers": r.model.n_layers}
        )  # fmt: skip
        assert r.train.max_tokens == round(2 * count_params(config)[1])


@pytest.mark.slow
def test_a_ladder_trains_and_records_its_sizes(tmp_path, ladder_doc, plugins) -> None:
    ladder_doc["ladder"]["target_flops"] = 1e12
    table = run(parse_spec(ladder_doc), tmp_path, plugins=plugins, progress=False)
    assert len(table) == 6 and (table["status"] == "ok").all()
    # Every run trains to its size's budget, rounded up to whole steps of 4 x 32 tokens.
    assert sorted(set(table["tokens"])) == [640, 768, 1280]
    experiment = json.loads((tmp_path / "experiment.json").read_text())
    assert list(experiment["ladder"]["sizes"]) == ["d16-L1-h2", "d32-L1-h2", "nano"]
    assert experiment["ladder"]["target_flops"] == 1e12


@pytest.mark.parametrize(
    ("ladder", "message"),
    [
        ({"sizes": ["nano"], "tokens": 1000}, "at least 2 sizes"),
        ({"sizes": ["nano", "huge"], "tokens": 1000}, "size 'huge' is not a preset"),
        ({"sizes": ["nano", {"emb_dim": 8}], "tokens": 1000}, "must be a preset name or a table"),
        ({"sizes": ["nano", "micro"]}, "needs one budget per size"),
        ({"sizes": ["nano", "micro"], "tokens": 1, "tokens_per_param": 2}, "needs one budget"),
        ({"sizes": ["nano", "micro"], "tokens": [1, 2, 3]}, "a list of 2"),
        ({"sizes": ["nano", "nano"], "tokens": 100}, "lists size 'nano' twice"),
        ({"sizes": ["nano", "micro"], "tokens": 100, "metric": "loss"}, "metric must be one of"),
        ({"sizes": ["nano", "micro"], "tokens": 100, "steps": 3}, "has no key 'steps'"),
        ({"sizes": ["nano", "micro"], "tokens": float("inf")}, "positive, finite number or"),
        ({"sizes": ["nano", "micro"], "tokens_per_param": float("inf")}, "positive, finite"),
        ({"sizes": ["nano", "micro"], "tokens": 100, "target_flops": float("inf")}, "finite"),
        ({"sizes": ["nano", "micro"], "tokens": 0.5}, "at least 1 token per size"),
        ({"sizes": ["nano", "micro"], "tokens_per_param": 1e-9}, "give at least one token per"),
    ],
)
def test_bad_ladders_are_one_line_errors(tiny_doc, ladder, message) -> None:
    tiny_doc["ladder"] = ladder
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(tiny_doc)
    assert "\n" not in str(info.value)


def test_a_variant_may_not_set_the_size_and_tune_waits(ladder_doc) -> None:
    ladder_doc.pop("grid")
    ladder_doc["variants"] = [{"name": "wide", "model": {"emb_dim": 48}}]
    with pytest.raises(SpecError, match=r"a variant sets model\.emb_dim, which \[ladder\] sets"):
        parse_spec(ladder_doc)
    ladder_doc.pop("variants")
    ladder_doc["tune"] = {"train.lr": [1e-3, 3e-3]}
    with pytest.raises(SpecError, match="not supported yet"):
        parse_spec(ladder_doc)


def test_a_ladder_fitting_the_test_split_needs_one(ladder_doc) -> None:
    ladder_doc["ladder"]["metric"] = "test_loss"
    with pytest.raises(SpecError, match=r"metric = 'test_loss' fits the test split, which") as info:
        parse_spec(ladder_doc)
    assert "\n" not in str(info.value) and "data.test_fraction" in str(info.value)
    ladder_doc["data"]["test_fraction"] = 0.05
    assert parse_spec(ladder_doc).ladder.metric == "test_loss"


def test_a_ladder_across_tokenizers_must_fit_bits_per_byte(ladder_doc) -> None:
    ladder_doc["grid"] = {"data.tokenizer": ["bytes", "bpe"]}
    with pytest.raises(SpecError, match=r"different tokenizers, .* metric = 'val_bpb'") as info:
        parse_spec(ladder_doc)
    assert "\n" not in str(info.value)
    ladder_doc["ladder"]["metric"] = "val_bpb"
    assert parse_spec(ladder_doc).ladder.metric == "val_bpb"


def test_tokens_per_param_counts_the_baselines_own_vocabulary(ladder_doc) -> None:
    # [data] says bytes (257 ids); the baseline variant trains gpt2's 50,257, and an untied
    # head counts as non-embedding, so the budget must be counted with gpt2's vocabulary.
    ladder_doc["grid"] = {"data.tokenizer": ["gpt2", "bytes"]}
    ladder_doc["model"]["tie_embeddings"] = False
    ladder_doc["ladder"] = {"sizes": SIZES[::2], "tokens_per_param": 1, "metric": "val_bpb"}
    spec = parse_spec(ladder_doc)
    for r in spec.runs:
        config = ModelConfig.from_dict(
            {"vocab_size": 50257, "context_length": 32, "n_heads": 2, "emb_dim": r.model.emb_dim,
             "n_layers": r.model.n_layers, "tie_embeddings": False}
        )  # fmt: skip
        assert r.train.max_tokens == round(count_params(config)[1])
