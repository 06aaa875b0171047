"""A chain of cumulative variants through the CLI: `ablate run` trains a tiny three-step chain
(each step `after` the one before), and both it and `ablate report` show the steps."""

from __future__ import annotations

from tests.conftest import small_toml, write_spec
from toolkit.cli import main
from toolkit.files import read_json

CHAIN = """
[[variants]]
name = "gpt2"

[[variants]]
name = "rope"
after = "previous"
model.positional = "rope"

[[variants]]
name = "rmsnorm"
after = "rope"
model.norm = "rmsnorm"
"""


def steps_rows(out: str) -> dict[str, list[str]]:
    """The steps table's rows in printed text, by variant: the cells after the name."""
    lines = out[out.index("steps, each variant against the one it builds on") :].splitlines()
    rows = {}
    for line in lines[2:]:
        cells = line.lstrip("* ").split()
        if not cells or cells[0] not in ("gpt2", "rope", "rmsnorm"):
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_a_three_step_chain_trains_and_reports_its_steps(tmp_path, capsys):
    text = small_toml("chain", seeds=(0, 1), train="max_steps = 3\neval_interval = 3") + CHAIN
    spec = write_spec(tmp_path / "chain.toml", text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = steps_rows(printed)
    assert list(rows) == ["gpt2", "rope", "rmsnorm"]
    assert rows["gpt2"][:2] == ["-", "-"]
    assert rows["rope"][:2] == ["gpt2", "model.positional=rope"]
    assert rows["rmsnorm"][:2] == ["rope", "model.norm=rmsnorm"]
    assert rows["rmsnorm"][2] != "-"  # a step delta, from two seeds

    config = read_json(out / "rmsnorm" / "seed-1" / "config.json")
    assert config["after"] == "rope" and config["own_overrides"] == {"model.norm": "rmsnorm"}
    assert config["model"]["positional"]["name"] == "rope"  # from rope, the step before
    assert config["model"]["norm"]["name"] == "rmsnorm"

    assert main(["report", str(out)]) == 0
    assert steps_rows(capsys.readouterr().out) == rows
    assert "## Steps" in (out / "report.md").read_text()
