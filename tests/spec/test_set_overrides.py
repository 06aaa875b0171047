"""`--set` values that are not the TOML they start as, and a component chosen on the command
line: the options it keeps, drops (with a note) and takes, whatever the order of the --set."""

from __future__ import annotations

import tomllib

import pytest

from tests.conftest import TINY_TOML, write_spec
from toolkit.cli import main
from toolkit.errors import SpecError
from toolkit.spec.overrides import parse_override
from toolkit.spec.parse import parse_spec


# -- a value that starts as TOML but is not -------------------------------------------------
@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("seeds=[0,", "Invalid value"),
        ('model.norm={name="rmsnorm"', "Unclosed inline table"),
        ('sampling.prompt="The end', "Unterminated string"),
        ("sampling.prompt='The end", 'Expected "\'"'),
        ("seeds=[0, 1]]", "something follows the value"),
    ],
)
def test_a_value_that_opens_as_toml_but_does_not_parse_is_an_error(item, why):
    key, _, text = item.partition("=")
    with pytest.raises(SpecError) as info:
        parse_override(item)
    message = str(info.value)
    assert message.startswith(f"--set {key}: {text!r} is not a valid TOML value ({why}); ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("model.norm=rmsnorm", "rmsnorm"),
        ("sampling.prompt=The end", "The end"),
        ("train.lr=1e-3", 1e-3),
        ("seeds=[0, 1]", [0, 1]),
        ('sampling.prompt="[INST]"', "[INST]"),
    ],
)
def test_bare_words_stay_strings_and_whole_toml_values_parse(item, value):
    assert parse_override(item)[1] == value


def test_the_cli_says_the_value_is_not_toml_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.toml", TINY_TOML)
    assert main(["validate", str(spec), "--set", "seeds=[0,"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("ablate: error: --set seeds: '[0,' is not a valid TOML value"), err


# -- a component chosen on the command line ---------------------------------------------------
def norm_of(doc: dict, *overrides: str) -> tuple[object, list[str]]:
    spec = parse_spec(doc, overrides=list(overrides))
    return spec.runs[0].model.norm, spec.notes


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.norm.eps=0.5", "model.norm=rmsnorm"),
        ("model.norm=rmsnorm", "model.norm.eps=0.5"),
        ("model.norm=scalenorm", "model.norm.eps=0.5", "model.norm=rmsnorm"),
    ],
)
def test_an_option_set_on_the_command_line_goes_to_the_component_named_there(tiny_doc, overrides):
    norm, notes = norm_of(tiny_doc, *overrides)
    assert norm == {"name": "rmsnorm", "eps": 0.5}
    assert notes == []


def test_the_same_component_keeps_the_options_the_spec_gave_it(tiny_doc):
    tiny_doc["model"]["norm"] = {"name": "rmsnorm", "eps": 0.5}
    assert norm_of(tiny_doc, "model.norm=rmsnorm") == ({"name": "rmsnorm", "eps": 0.5}, [])


def test_another_component_starts_from_its_defaults_and_a_note_names_what_it_drops(tiny_doc):
    tiny_doc["model"]["norm"] = {"name": "rmsnorm", "eps": 0.5}
    norm, notes = norm_of(tiny_doc, "model.norm=layernorm")
    assert norm == {"name": "layernorm", "eps": 1e-5}
    assert notes == [
        "--set model.norm=layernorm replaces rmsnorm(eps=0.5) of <spec>, dropping its "
        "option(s) eps; to keep eps, add --set model.norm.eps=0.5"
    ]


def test_an_option_set_again_on_the_command_line_is_not_said_to_be_dropped(tiny_doc):
    tiny_doc["model"]["norm"] = {"name": "rmsnorm", "eps": 0.5}
    norm, notes = norm_of(tiny_doc, "model.norm.eps=0.25", "model.norm=layernorm")
    assert norm == {"name": "layernorm", "eps": 0.25}
    assert notes == []


def test_a_grid_axis_takes_the_options_whatever_the_order():
    doc = tomllib.loads(TINY_TOML)
    first = parse_spec(doc, overrides=["model.norm.eps=0.5", "model.norm=rmsnorm"])
    second = parse_spec(doc, overrides=["model.norm=rmsnorm", "model.norm.eps=0.5"])
    assert [r.model.norm for r in first.runs] == [r.model.norm for r in second.runs]
    assert first.runs[0].model.norm == {"name": "rmsnorm", "eps": 0.5}


def test_the_grid_takes_the_component_as_given_not_the_base_s_options(tiny_doc):
    # The grid's choices are its own (its rmsnorm is at its defaults): the axis becomes the
    # one value given, as the note says, whatever options the base's rmsnorm has.
    tiny_doc["model"]["norm"] = {"name": "rmsnorm", "eps": 0.5}
    tiny_doc["grid"] = {"model.norm": ["layernorm", "rmsnorm"]}
    spec = parse_spec(tiny_doc, overrides=["model.norm=rmsnorm"])
    assert [(r.variant, r.model.norm) for r in spec.runs] == [
        ("norm=rmsnorm", {"name": "rmsnorm", "eps": 1e-5})
    ]
