"""collect(): the runs table of an experiment folder, as the folder's experiment.json says it
is now (results.csv, toolkit.collect)."""

from __future__ import annotations

import pytest

from toolkit.spec.parse import parse_spec
from toolkit.sweep.results import collect
from toolkit.sweep.runner import run


@pytest.mark.slow
def test_the_baseline_is_the_experiments_now_not_what_a_run_recorded(tmp_path, tiny_doc, plugins):
    tiny_doc["grid"] = {"model.activation": ["gelu", "relu"]}
    run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    written = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/seed-*/summary.json")}
    tiny_doc["baseline"] = "activation=relu"
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing trained again
    for t in (table, collect(tmp_path)):
        marked = t.loc[t["baseline"].astype(bool), "variant"].tolist()
        assert marked == ["activation=relu"]


@pytest.mark.slow
def test_a_diverged_run_is_kept_by_a_rerun(tmp_path, tiny_doc, plugins, capsys):
    tiny_doc["train"]["lr"] = 1e4  # diverges within its few steps, the same way every time
    first = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert first["status"].tolist() == ["diverged"]
    summary = next(tmp_path.glob("*/seed-0/summary.json"))
    written = summary.stat().st_mtime_ns
    capsys.readouterr()
    again = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert summary.stat().st_mtime_ns == written  # not trained again
    assert again["status"].tolist() == ["diverged"]
    assert "training it again" not in capsys.readouterr().err
