from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_TOML, write_spec
from toolkit.errors import SpecError
from toolkit.spec.overrides import parse_override
from toolkit.spec.parse import load_spec, parse_spec


def test_grid_expands_to_variants_times_seeds(tmp_path, plugins):
    spec = load_spec(write_spec(tmp_path / "tiny.toml", TINY_TOML), plugins=plugins)
    assert [v.name for v in spec.variants] == ["norm=layernorm", "norm=rmsnorm"]
    assert len(spec.runs) == 4
    assert [(r.variant, r.seed) for r in spec.runs][:2] == [
        ("norm=layernorm", 0),
        ("norm=rmsnorm", 0),
    ]
    assert spec.baseline == "norm=layernorm"
    assert spec.run_named("norm=rmsnorm", 1).model.norm == {"name": "rmsnorm", "eps": 1e-5}


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 3))
def test_grid_size_is_the_product_of_its_axes(sizes, n_seeds):
    axes = ["train.lr", "train.weight_decay", "train.grad_clip"]
    doc = {
        "seeds": list(range(n_seeds)),
        "data": {"tokenizer": "bytes"},
        "grid": {axes[i]: [0.1 * (j + 1) for j in range(n)] for i, n in enumerate(sizes)},
    }
    spec = parse_spec(doc)
    assert len(spec.variants) == math.prod(sizes)
    assert len(spec.runs) == math.prod(sizes) * n_seeds
    assert len({r.config_hash() for r in spec.runs}) == len(spec.runs)


def test_explicit_variants_nested_or_dotted_and_options(tiny_doc):
    doc = {
        **tiny_doc,
        "baseline": "rms",
        "variants": [
            {"name": "ln"},
            {"name": "rms", "model": {"norm": {"name": "rmsnorm", "eps": 1e-6}}},
            {"name": "rms-eps", "model.norm": "rmsnorm", "model.norm.eps": 1e-3},
            {"name": "topk", "sampling.sampler": "top-k", "sampling.sampler.k": 3},
        ],
    }
    spec = parse_spec(doc)
    assert spec.baseline == "rms"
    assert spec.run_named("rms", 0).model.norm == {"name": "rmsnorm", "eps": 1e-6}
    assert spec.run_named("rms-eps", 0).model.norm == {"name": "rmsnorm", "eps": 1e-3}
    assert spec.run_named("topk", 0).sampling.sampler == {
        "name": "top-k",
        "k": 3,
        "temperature": 1.0,
    }
    assert spec.run_named("ln", 0).model.norm == {"name": "layernorm", "eps": 1e-5}
    assert spec.axes() == ["model.norm", "model.norm.eps", "sampling.sampler", "sampling.sampler.k"]


def test_set_overrides_are_toml_values(tmp_path, plugins):
    path = write_spec(tmp_path / "tiny.toml", TINY_TOML)
    spec = load_spec(
        path,
        [
            "train.lr=1e-2",
            "seeds=[5]",
            "model.attention=sdpa",
            "sampling.prompt=Hi",
            "model.norm.eps=0.001",
        ],
        plugins=plugins,
    )
    r = spec.runs[0]
    assert (r.train.lr, r.seed, r.sampling.prompt) == (0.01, 5, "Hi")
    assert r.model.attention == {"name": "sdpa", "qk_norm": False}  # options resolved to defaults
    assert parse_override("model.qkv_bias=true") == ("model.qkv_bias", True)
    # One string, not a list of them: each character would read as a --set of its own.
    with pytest.raises(SpecError, match=r"overrides must be a list .* e\.g\. \['train.lr=1e-2'\]"):
        load_spec(path, "train.lr=1e-2", plugins=plugins)
    assert parse_override("train.betas=[0.9, 0.99]") == ("train.betas", [0.9, 0.99])


def test_presets_fill_sizes_and_explicit_keys_win(tiny_doc):
    tiny_doc["model"] = {"preset": "gpt2-small", "context_length": 256}
    r = parse_spec(tiny_doc).runs[0]
    assert (r.model.emb_dim, r.model.n_layers, r.model.context_length, r.model.tie_embeddings) == (
        768,
        12,
        256,
        True,
    )


def test_default_budget_and_single_base_variant():
    spec = parse_spec({"data": {"tokenizer": "bytes"}})
    assert [v.name for v in spec.variants] == ["base"]
    assert spec.runs[0].train.max_steps == 200


BAD = [
    ({"model": {"nrom": "rmsnorm"}}, r"\[model\] unknown key 'nrom' \(did you mean 'norm'\?\)"),
    ({"modle": {}}, r"unknown top-level key 'modle' \(did you mean 'model'\?\)"),
    (
        {"model": {"norm": "rmsnrom"}},
        r"unknown normalization 'rmsnrom' \(did you mean 'rmsnorm'\?\); choose one of",
    ),
    ({"model": {"emb_dim": "big"}}, r"model.emb_dim must be an integer, got 'big'"),
    (
        {"model": {"emb_dim": 30, "n_heads": 4}},
        r"emb_dim \(30\) must be divisible by model.n_heads \(4\)",
    ),
    ({"model": {"n_layers": 0}}, r"model.n_layers must be at least 1"),
    ({"model": {"drop_rate": 1.5}}, r"drop_rate must be in \[0, 1\)"),
    ({"model": {"preset": "gpt3"}}, r"unknown preset 'gpt3'"),
    ({"model": {"norm": {"name": "rmsnorm", "epsilon": 1}}}, r"takes no option 'epsilon'"),
    ({"model": {"norm": {"eps": 1}}}, r"needs a component name"),
    ({"train": {"max_steps": 5, "epochs": 1}}, r"give one budget, not max_steps and epochs"),
    ({"train": {"max_steps": -1}}, r"train.max_steps must be a positive, finite number"),
    ({"train": {"lr": 0}}, r"train.lr must be positive"),
    ({"train": {"lr": float("inf")}}, r"train.lr must be positive and finite, got inf"),
    ({"train": {"grad_clip": float("inf")}}, r"train.grad_clip must be a finite number"),
    ({"model": {"norm": {"name": "rmsnorm", "eps": -1.0}}}, r"eps must be a finite number > 0"),
    (
        {"model": {"norm": {"name": "layernorm", "eps": float("nan")}}},
        r"'layernorm': eps must be a finite number > 0, got nan",
    ),
    ({"train": {"betas": [0.9]}}, r"train.betas must be two numbers"),
    ({"train": {"device": "tpu"}}, r"train.device must be"),
    (
        {"train": {"eval_windows": "random"}},
        r"train.eval_windows must be one of grid, spread, got 'random'",
    ),
    (
        {"train": {"weight_decay_on": "norms"}},
        r"train.weight_decay_on must be one of matrices, all, got 'norms'",
    ),
    ({"data": {"val_fraction": 1.0}}, r"val_fraction must be a number strictly between 0 and 1"),
    (
        {"data": {"tokenizer": "gpt3"}},
        r"unknown tokenizer 'gpt3' \(did you mean 'gpt2'\?\); choose one of: .*bytes, gpt2",
    ),
    ({"data": {"corpus": "pydoc", "path": "x.txt"}}, r"either path .* or corpus, not both"),
    ({"sampling": {"sampler": {"name": "top-k", "k": 0}}}, r"k must be at least 1"),
    ({"sampling": {"max_new_tokens": 10**10}}, r"max_new_tokens must be from 0 to 1,048,576"),
    ({"seeds": []}, r"seeds is empty"),
    ({"seeds": [1, 1]}, r"has duplicates"),
    ({"seeds": ["a"]}, r"seeds must be an integer"),
    ({"grid": {"model.nrom": ["a"]}}, r"\[model\] has no key 'nrom' \(did you mean 'norm'\?\)"),
    ({"grid": {"norm": ["a"]}}, r"must start with one of data., model., train., sampling."),
    ({"grid": {"model.norm": []}}, r"must be a non-empty list"),
    (
        {"grid": {"model.norm": ["layernorm", "bogus"]}},
        r"variant 'norm=bogus': .*unknown normalization 'bogus'",
    ),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, r"two variants are named 'a'"),
    ({"variants": [{"name": "figures"}]}, r"'figures' would share the folder of the report's"),
    ({"variants": [{"name": "sampling"}]}, r"share the folder of a sampling ablation's results"),
    ({"variants": [{"name": "tune"}]}, r"'tune' would share the folder of the tuning runs"),
    ({"variants": [{"model.norm": "rmsnorm"}]}, r"variant #1 needs a name"),
    ({"variants": [{"name": "a", "model.emb_dim.x": 1}]}, r"too deep"),
    ({"baseline": "nope"}, r"baseline 'nope' is not a variant"),
    ({"name": "../escape"}, r"name '../escape' may hold only"),
    ({"model": "small"}, r"'model' must be a table"),
]


@pytest.mark.parametrize("budget", ["max_flops", "epochs"])
def test_an_infinite_budget_is_refused_before_training(tiny_doc, budget):
    del tiny_doc["train"]["max_steps"]
    tiny_doc["train"][budget] = float("inf")
    with pytest.raises(SpecError, match=rf"train\.{budget} must be a positive, finite number"):
        parse_spec(tiny_doc, source="bad.toml")


@pytest.mark.parametrize(("patch", "message"), BAD)
def test_bad_specs_are_one_line_spec_errors(tiny_doc, patch, message):
    doc = {
        **tiny_doc,
        **{
            k: ({**tiny_doc.get(k, {}), **v} if isinstance(v, dict) and k in tiny_doc else v)
            for k, v in patch.items()
        },
    }
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(doc, source="bad.toml")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("bad.toml")


def test_file_level_errors(tmp_path, plugins):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.toml", plugins=plugins)
    bad = write_spec(tmp_path / "bad.toml", "[model]\nemb_dim = = 3\n")
    with pytest.raises(SpecError, match=r"bad.toml: TOML syntax error: .*line 2"):
        load_spec(bad, plugins=plugins)
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(write_spec(tmp_path / "ok.toml", TINY_TOML), ["train.lr"], plugins=plugins)
    with pytest.raises(SpecError, match="unknown key 'trian'"):
        load_spec(write_spec(tmp_path / "ok.toml", TINY_TOML), ["trian.lr=1"], plugins=plugins)


def test_options_added_later_are_recorded_only_away_from_what_older_runs_had(tiny_doc):
    """A LayerNorm's `bias`, an init's `zero_residual`, an attention's `gate` and `sinks` and
    rope's `fraction` arrived after runs were recorded: at their old values they stay out of the
    record, so older runs keep their hashes."""
    tiny_doc["model"]["attention"] = {"name": "multihead", "qk_norm": False}
    tiny_doc["model"]["positional"] = "rope"
    plain = parse_spec(tiny_doc).runs[0]
    assert plain.model.norm == {"name": "layernorm", "eps": 1e-5}
    assert plain.model.init == "default"
    assert plain.model.attention == {"name": "multihead", "qk_norm": False}
    assert plain.model.positional == {"name": "rope", "theta": 10000.0}
    tiny_doc["model"].update(
        norm={"name": "layernorm", "bias": True},
        init={"name": "default", "zero_residual": False},
        attention={"name": "multihead", "qk_norm": False, "gate": False, "sinks": False},
        positional={"name": "rope", "fraction": 1.0},
    )
    assert parse_spec(tiny_doc).runs[0].config_hash() == plain.config_hash()
    tiny_doc["model"].update(
        norm={"name": "layernorm", "bias": False},
        init={"name": "default", "zero_residual": True},
        attention={"name": "multihead", "gate": True, "sinks": True},
        positional={"name": "rope", "fraction": 0.5},
    )
    changed = parse_spec(tiny_doc).runs[0]
    assert changed.model.norm == {"name": "layernorm", "eps": 1e-5, "bias": False}
    assert changed.model.init == {"name": "default", "zero_residual": True}
    assert changed.model.attention == {
        "name": "multihead",
        "qk_norm": False,
        "gate": True,
        "sinks": True,
    }
    assert changed.model.positional == {"name": "rope", "theta": 10000.0, "fraction": 0.5}
    assert changed.config_hash() != plain.config_hash()
