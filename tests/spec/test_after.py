"""Cumulative variants (`after`, toolkit.spec.chains): a variant builds on an earlier one's
settings, chains compose, the command line still wins, the config hash is the settings' alone,
and every misuse is a one-line SpecError before anything trains."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_TOML, write_spec
from toolkit.errors import SpecError
from toolkit.spec.chains import merge
from toolkit.spec.parse import load_spec, parse_spec


def chain(tiny_doc: dict, *variants: dict, **top) -> dict:
    return {**tiny_doc, **top, "variants": list(variants)}


GPT2_TO_MODERN = (
    {"name": "gpt2"},
    {"name": "rope", "after": "previous", "model.positional": "rope"},
    {"name": "rmsnorm", "after": "previous", "model": {"norm": {"name": "rmsnorm", "eps": 1e-6}}},
    {"name": "swiglu", "after": "rmsnorm", "model.activation": "swiglu", "train.lr": 2e-3},
)


def test_a_chain_composes_each_variant_on_the_one_before(tiny_doc):
    spec = parse_spec(chain(tiny_doc, *GPT2_TO_MODERN))
    assert spec.baseline == "gpt2"
    assert [(v.name, v.after) for v in spec.variants] == [
        ("gpt2", None),
        ("rope", "gpt2"),
        ("rmsnorm", "rope"),
        ("swiglu", "rmsnorm"),
    ]
    last = spec.run_named("swiglu", 0)
    assert last.choices()["positional"] == "rope"  # from rope, two steps back
    assert last.model.norm == {"name": "rmsnorm", "eps": 1e-6}
    assert last.choices()["activation"] == "swiglu" and last.train.lr == 2e-3
    assert spec.variants[3].own == {"model.activation": "swiglu", "train.lr": 2e-3}
    assert spec.variants[3].overrides == {
        "model.positional": "rope",
        "model.norm": {"name": "rmsnorm", "eps": 1e-6},
        "model.activation": "swiglu",
        "train.lr": 2e-3,
    }
    first = spec.run_named("gpt2", 0)
    assert first.choices()["positional"] == "learned" and first.train.lr == 3e-3


def test_its_own_keys_win_and_a_new_component_drops_the_earlier_options(tiny_doc):
    spec = parse_spec(
        chain(
            tiny_doc,
            {"name": "a", "model.norm": "rmsnorm", "model.norm.eps": 1e-6, "train.lr": 1e-3},
            {"name": "b", "after": "a", "train.lr": 5e-3},
            {"name": "c", "after": "b", "model.norm": "layernorm"},
            {"name": "d", "after": "b", "model.norm.eps": 1e-4},
        )
    )
    assert spec.run_named("b", 0).train.lr == 5e-3
    assert spec.run_named("b", 0).model.norm == {"name": "rmsnorm", "eps": 1e-6}
    assert spec.run_named("c", 0).model.norm == {"name": "layernorm", "eps": 1e-5}  # its default
    assert spec.run_named("d", 0).model.norm == {"name": "rmsnorm", "eps": 1e-4}
    assert merge(
        {"model.norm": "rmsnorm", "model.norm.eps": 1e-6}, {"model.norm": "layernorm"}
    ) == {"model.norm": "layernorm"}


def test_the_hash_is_the_settings_not_the_route(tiny_doc):
    """A chain step hashes as the same settings written out in full, or reached another way:
    `after` is recorded in config.json (for reports), never in what identifies the run."""
    chained = parse_spec(chain(tiny_doc, *GPT2_TO_MODERN))
    flat = parse_spec(
        chain(
            tiny_doc,
            {"name": "gpt2"},
            {
                "name": "modern",
                "model.positional": "rope",
                "model.norm": {"name": "rmsnorm", "eps": 1e-6},
                "model.activation": "swiglu",
                "train.lr": 2e-3,
            },
        )
    )
    other_route = parse_spec(
        chain(
            tiny_doc,
            {"name": "x", "model.activation": "swiglu", "train.lr": 2e-3},
            {"name": "y", "after": "x", "model.norm": {"name": "rmsnorm", "eps": 1e-6}},
            {"name": "z", "after": "y", "model.positional": "rope"},
        )
    )
    swiglu = chained.run_named("swiglu", 0)
    assert swiglu.config_hash() == flat.run_named("modern", 0).config_hash()
    assert swiglu.config_hash() == other_route.run_named("z", 0).config_hash()
    assert swiglu.config_hash() != chained.run_named("rmsnorm", 0).config_hash()

    config = swiglu.config()
    assert config["after"] == "rmsnorm"
    assert config["own_overrides"] == {"model.activation": "swiglu", "train.lr": 2e-3}
    assert config["overrides"] == flat.run_named("modern", 0).overrides
    assert "after" not in chained.run_named("gpt2", 0).config()  # unchanged without after
    assert "own_overrides" not in flat.run_named("modern", 0).config()


def test_set_on_the_command_line_wins_over_every_step(tiny_doc):
    doc = chain(tiny_doc, *GPT2_TO_MODERN)
    spec = parse_spec(doc, overrides=["model.norm=scalenorm", "train.lr=1e-2"])
    for v in ("gpt2", "rope", "rmsnorm", "swiglu"):
        run = spec.run_named(v, 0)
        assert run.choices()["norm"] == "scalenorm" and run.train.lr == 1e-2, v
    assert spec.run_named("swiglu", 0).choices()["positional"] == "rope"  # the rest still builds
    assert spec.variants[2].own == {} and spec.variants[2].after == "rope"
    assert any("variant(s) rmsnorm of" in note for note in spec.notes)

    # An option under a component choice is set in every choice, the inherited ones included.
    spec = parse_spec(doc, overrides=["model.norm.eps=1e-3"])
    assert spec.run_named("rmsnorm", 0).model.norm == {"name": "rmsnorm", "eps": 1e-3}
    assert spec.run_named("swiglu", 0).model.norm == {"name": "rmsnorm", "eps": 1e-3}
    assert spec.run_named("gpt2", 0).model.norm == {"name": "layernorm", "eps": 1e-3}


def test_a_grid_beside_a_chain_varies_the_base(tiny_doc):
    doc = chain(
        tiny_doc,
        {"name": "gpt2"},
        {"name": "rope", "after": "previous", "model.positional": "rope"},
        grid={"train.lr": [1e-3, 2e-3]},
    )
    spec = parse_spec(doc)
    assert [(v.name, v.after) for v in spec.variants] == [
        ("gpt2", None),
        ("rope", "gpt2"),
        ("lr=0.001", None),
        ("lr=0.002", None),
    ]
    assert spec.run_named("lr=0.002", 0).choices()["positional"] == "learned"


def test_after_from_a_toml_file(tmp_path, plugins):
    text = TINY_TOML.split("[grid]")[0] + (
        '[[variants]]\nname = "gpt2"\n\n'
        '[[variants]]\nname = "rms"\nafter = "previous"\nmodel.norm = "rmsnorm"\n\n'
        '[[variants]]\nname = "relu"\nafter = "rms"\nmodel.activation = "relu"\n'
    )
    spec = load_spec(write_spec(tmp_path / "chain.toml", text), plugins=plugins)
    assert spec.run_named("relu", 1).choices()["norm"] == "rmsnorm"
    assert spec.run_named("relu", 1).choices()["activation"] == "relu"


BAD = [
    (
        [{"name": "a", "after": "previous"}],
        r"variant 'a': after = \"previous\" on the first variant: .*starts from the base "
        r"settings already.*leave after out",
    ),
    (
        [{"name": "a"}, {"name": "b", "after": "aa"}],
        r"variant 'b': after 'aa' is not a variant \(did you mean 'a'\?\)",
    ),
    (
        [{"name": "a", "after": "b"}, {"name": "b"}],
        r"variant 'a': after 'b' names a variant listed after it; .*move 'b' above 'a'",
    ),
    ([{"name": "a"}, {"name": "b", "after": "b"}], r"variant 'b': after names the variant itself"),
    (
        [{"name": "a"}, {"name": "b", "after": 1}],
        r"variant 'b': after must be the name of an earlier variant or \"previous\", got 1",
    ),
    (
        [{"name": "a"}, {"name": "b", "after": ["a"]}],
        r"after must be the name of an earlier variant .*got \['a'\]",
    ),
    (
        [{"name": "a"}, {"name": "b", "after": "lr=0.001"}],
        r"variant 'b': after 'lr=0.001' names a grid variant; grid variants vary the base",
    ),
]


@pytest.mark.parametrize(("variants", "message"), BAD)
def test_bad_after_is_a_one_line_spec_error(tiny_doc, variants, message):
    doc = chain(tiny_doc, *variants, grid={"train.lr": [1e-3]})
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(doc, source="bad.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.toml: ")


def test_after_is_no_grid_axis(tiny_doc):
    with pytest.raises(SpecError, match=r"bad.toml: \[grid\] cannot vary after") as info:
        parse_spec({**tiny_doc, "grid": {"after": ["a"]}}, source="bad.toml")
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match=r"\[grid\] cannot vary after"):
        parse_spec(chain(tiny_doc, {"name": "a"}), overrides=['grid.after=["a"]'])
    with pytest.raises(SpecError, match=r"unknown key 'after'"):
        parse_spec(chain(tiny_doc, {"name": "a"}), overrides=["after=a"])
