"""`--set` on the command line wins over the spec: over keys a grid or variants set, over the
corpus a spec names, and it can set a grid axis. Each through the real CLI (`ablate validate`,
which prints every variant), and each says what it replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_TOML

from toolkit.cli import main

VARIANTS = (
    TINY_TOML.split("[grid]")[0]
    + """
[[variants]]
name = "rms"
model.norm = "rmsnorm"

[[variants]]
name = "scale-relu"
model.norm = "scalenorm"
model.activation = "relu"
"""
)


def validate(tmp_path: Path, capsys, text: str, *sets: str) -> tuple[int, str, str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(text, encoding="utf-8")
    args = ["validate", str(spec)]
    for item in sets:
        args += ["--set", item]
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def variant_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith("  ")]


def test_setting_a_key_the_grid_varies_replaces_the_axis_with_one_value(tmp_path, capsys):
    code, out, err = validate(tmp_path, capsys, TINY_TOML, "model.norm=scalenorm")
    assert code == 0, err
    assert "1 variant x 2 seeds" in out
    assert "norm=scalenorm" in out and "rmsnorm" not in out
    assert "note: --set model.norm replaces the grid axis 'model.norm'" in err


@pytest.mark.slow
def test_a_grid_axis_is_set_from_the_command_line(tmp_path, capsys):
    code, out, err = validate(
        tmp_path, capsys, TINY_TOML, 'grid."model.norm"=["layernorm","scalenorm"]'
    )
    assert code == 0, err
    assert "norm=scalenorm" in out and "norm=rmsnorm" not in out
    assert "replaces the grid axis 'model.norm'" in err
    code, out, err = validate(
        tmp_path, capsys, TINY_TOML, 'grid."model.activation"=["gelu","relu"]'
    )
    assert code == 0, err
    assert "4 variants" in out and "norm=rmsnorm,activation=relu" in out
    assert "adds the grid axis 'model.activation'" in err


def test_setting_a_key_variants_set_takes_it_out_of_them(tmp_path, capsys):
    code, out, err = validate(tmp_path, capsys, VARIANTS, "model.norm=layernorm")
    assert code == 0, err
    assert "2 variants" in out
    assert "overrides what variant(s) rms, scale-relu of" in err
    # An option of the choice they make is set in each of their choices.
    code, _, err = validate(tmp_path, capsys, VARIANTS, "model.norm.eps=1e-3")
    assert code == 0, err
    assert "overrides what variant(s) rms, scale-relu of" in err


def test_an_option_under_a_grid_axis_is_set_in_every_choice(tmp_path, capsys):
    code, _, err = validate(tmp_path, capsys, TINY_TOML, "model.norm.eps=1e-3")
    assert code == 0, err
    assert "sets 'eps' in every choice of grid axis 'model.norm'" in err


def test_data_path_on_the_command_line_replaces_the_corpus(tmp_path, capsys):
    text = tmp_path / "my.txt"
    text.write_text("hello world, " * 2000, encoding="utf-8")
    spec = TINY_TOML.replace(
        '[data]\ntokenizer = "bytes"', '[data]\ncorpus = "pydoc"\ntokenizer = "bytes"'
    )
    code, _, err = validate(tmp_path, capsys, spec, f"data.path={text}")
    assert code == 0, err
    assert "note: --set data.path replaces data.corpus of" in err


def test_grid_and_variants_keys_say_how_to_set_them(tmp_path, capsys):
    code, _, err = validate(tmp_path, capsys, TINY_TOML, "variants=[]")
    assert code == 2 and err.count("\n") == 1
    assert "'variants' cannot be set from the command line" in err and "grid." in err
    code, _, err = validate(tmp_path, capsys, TINY_TOML, "sampling_ablation.n_prompts=3")
    assert code == 2 and "'sampling_ablation' cannot be set" in err and "grid axis" not in err
    code, _, err = validate(tmp_path, capsys, TINY_TOML, "gird.model.norm=[1]")
    assert code == 2 and "unknown key 'gird'" in err and "did you mean 'gird'" not in err
    code, _, err = validate(tmp_path, capsys, TINY_TOML, 'grid."model.norm"=[]')
    assert code == 2 and "a grid axis is a non-empty list" in err
    # The axis is read as TOML reads the key: its example is one quoted key, never half one.
    for key in ('grid."model.norm".eps', "grid.model.norm.eps", "grid.'model.norm'.eps"):
        code, _, err = validate(tmp_path, capsys, TINY_TOML, f"{key}=1")
        assert code == 2, err
        assert """e.g. --set 'grid."model.norm.eps"=[""" in err, err


def test_a_key_under_a_value_that_is_no_table_is_a_one_line_error(tmp_path, capsys):
    for dotted, held in (("train.max_steps.x", "6"), ("train.lr.y", "0.003")):
        code, _, err = validate(tmp_path, capsys, TINY_TOML, f"{dotted}=3")
        assert code == 2 and err.startswith("ablate: error: ") and err.count("\n") == 1, err
        assert f"is {held}, not a table" in err and "Traceback" not in err
