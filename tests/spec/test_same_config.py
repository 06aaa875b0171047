"""Variants that change nothing: two variants whose runs resolve to the same config are valid,
but a warning names them, in Python and on `ablate validate`'s stderr."""

from __future__ import annotations

from tests.conftest import small_toml, write_spec
from toolkit.cli import main
from toolkit.spec.parse import parse_spec

SAME = "resolve to the same config, so their runs are identical (seed for seed)"


def same_config(spec) -> list[str]:
    return [w for w in spec.warnings if SAME in w]


def test_a_variant_that_sets_the_base_value_is_named_with_its_twin(tiny_doc):
    doc = {
        **tiny_doc,
        "variants": [
            {"name": "base"},
            {"name": "one-layer", "model.n_layers": 1},  # the base has one already
            {"name": "two-layers", "model.n_layers": 2},
        ],
    }
    (warning,) = same_config(parse_spec(doc))
    assert warning.startswith("variants 'base' and 'one-layer' " + SAME)


def test_a_choice_at_its_defaults_is_the_bare_name(tiny_doc):
    doc = {
        **tiny_doc,
        "seeds": [0, 1],
        "grid": {
            "model.norm": [
                "layernorm",
                {"name": "layernorm", "eps": 1e-5},
                "rmsnorm",
                {"name": "layernorm", "bias": True},
            ]
        },
    }
    (warning,) = same_config(parse_spec(doc))  # one warning, not one per seed
    assert warning.startswith(
        "variants 'norm=layernorm', 'norm=layernorm(eps=1e-05)' and "
        "'norm=layernorm(bias=true)' " + SAME
    )


def test_variants_that_differ_are_not_warned_about(tiny_doc):
    doc = {**tiny_doc, "grid": {"model.norm": ["layernorm", "rmsnorm"], "train.lr": [1e-3, 2e-3]}}
    assert same_config(parse_spec(doc)) == []


def test_validate_says_it_on_stderr_and_passes(tmp_path, capsys):
    twins = '["layernorm", {name = "layernorm", eps = 1e-5}]'
    text = small_toml("twins") + f'[grid]\n"model.norm" = {twins}\n'
    assert main(["validate", str(write_spec(tmp_path / "spec.toml", text))]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if SAME in line]
    assert line.startswith(
        f"warning: variants 'norm=layernorm' and 'norm=layernorm(eps=1e-05)' {SAME}"
    )


def test_the_python_api_says_it_too(tmp_path, capsys):
    """toolkit.run of a spec file says its warnings as `ablate run` does (and notes, as ever)."""
    from toolkit.sweep.runner import run

    twins = '["layernorm", {name = "layernorm", eps = 1e-5}]'
    text = small_toml("twins") + f'[grid]\n"model.norm" = {twins}\n'
    run(write_spec(tmp_path / "spec.toml", text), tmp_path / "out")
    (line,) = [line for line in capsys.readouterr().err.splitlines() if SAME in line]
    assert line.startswith("warning: variants 'norm=layernorm' and ")
