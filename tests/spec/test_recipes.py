"""Recipes: `[model] recipe` fills the component choices (and the optimizer and schedule) a spec
leaves out, combines with a size preset, and yields to every key the spec sets itself."""

from __future__ import annotations

import pytest

from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.spec.recipes import RECIPES
from toolkit.sweep.runner import run


def first(doc, name: str = "base"):
    return parse_spec(doc).run_named(name, 0)


def test_the_modern_recipe_sets_every_choice_it_names(tiny_doc) -> None:
    tiny_doc["model"]["recipe"] = "modern"
    r = first(tiny_doc)
    m, names = r.model, r.choices()
    assert [names[k] for k in ("positional", "norm", "activation")] == ["rope", "rmsnorm", "swiglu"]
    assert m.attention == {"name": "sdpa", "qk_norm": True}
    assert (m.bias, m.qkv_bias, m.tie_embeddings, m.drop_rate) == (False, False, False, 0.0)
    assert (names["optimizer"], names["schedule"]) == ("adamw", "wsd")


def test_the_gpt2_recipe_is_the_defaults(tiny_doc) -> None:
    plain = first(tiny_doc)
    tiny_doc["model"]["recipe"] = "gpt2"
    del tiny_doc["model"]["drop_rate"]  # the tiny spec turns dropout off; the recipe says 0.1
    recipe = first(tiny_doc)
    assert recipe.model_config(257) == plain.model_config(257).__class__(
        **{**plain.model_config(257).__dict__, "drop_rate": 0.1}
    )
    assert recipe.train == plain.train


def test_a_recipe_at_a_preset_size_keeps_the_size_and_its_own_choices(tiny_doc) -> None:
    tiny_doc["model"] = {"preset": "gpt2-small", "recipe": "modern"}
    r = first(tiny_doc)
    m = r.model
    assert (m.emb_dim, m.n_layers, m.n_heads) == (768, 12, 12)
    # GPT-2's preset ties the head and keeps biases; the recipe says otherwise and wins.
    assert (m.tie_embeddings, m.bias, m.qkv_bias) == (False, False, False)
    assert r.choices()["norm"] == "rmsnorm"


def test_keys_the_spec_sets_win_over_the_recipe(tiny_doc) -> None:
    tiny_doc["model"].update(recipe="modern", activation="gelu")
    tiny_doc["train"]["schedule"] = "cosine"
    names = first(tiny_doc).choices()
    assert [names[k] for k in ("activation", "norm", "schedule")] == ["gelu", "rmsnorm", "cosine"]


def test_an_option_override_changes_the_recipes_component_not_the_default(tiny_doc) -> None:
    tiny_doc["model"]["recipe"] = "modern"
    tiny_doc["variants"] = [{"name": "no-qk-norm", "model.attention.qk_norm": False}]
    assert first(tiny_doc, "no-qk-norm").model.attention == {"name": "sdpa", "qk_norm": False}


def test_a_variant_can_switch_recipe(tiny_doc) -> None:
    tiny_doc["variants"] = [{"name": "gpt2"}, {"name": "modern", "model.recipe": "modern"}]
    spec = parse_spec(tiny_doc)
    gpt2, modern = spec.run_named("gpt2", 0), spec.run_named("modern", 0)
    assert (gpt2.choices()["norm"], modern.choices()["norm"]) == ("layernorm", "rmsnorm")
    assert modern.model.drop_rate == 0.0 == tiny_doc["model"]["drop_rate"]
    assert gpt2.config_hash() != modern.config_hash()


def test_an_unknown_recipe_is_a_one_line_error(tiny_doc) -> None:
    tiny_doc["model"]["recipe"] = "modrn"
    with pytest.raises(SpecError, match=r"unknown recipe 'modrn' \(did you mean 'modern'\?\)"):
        parse_spec(tiny_doc)


def test_a_recipe_on_a_checkpoint_is_a_one_line_error(tiny_doc, tmp_path) -> None:
    tiny_doc["model"].update(recipe="modern", init_from=str(tmp_path))
    with pytest.raises(SpecError, match=r"give either recipe or init_from, not both"):
        parse_spec(tiny_doc)


def test_every_recipe_trains(tmp_path, tiny_doc, plugins) -> None:
    for name in RECIPES:
        tiny_doc["model"]["recipe"] = name
        table = run(parse_spec(tiny_doc), tmp_path / name, plugins=plugins, progress=False)
        assert table["status"].tolist() == ["ok"], name
