"""A sweep folder written by the toolkit before its restructure still loads, reports and
resumes. tests/fixtures/legacy/ was written by commit 7f9fbaf from tests/fixtures/legacy.toml: seed 0
finished; seed 1 was interrupted after its step-3 evaluation, leaving resume.pt.
tests/fixtures/legacy-seed-1-uninterrupted.jsonl is what 7f9fbaf wrote for seed 1 left alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import toolkit
from toolkit.cli import main

DATA = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    out = tmp_path / "legacy"
    shutil.copytree(DATA / "legacy", out)
    return out


def test_its_checkpoint_loads_and_generates(legacy: Path):
    run = legacy / "base" / "seed-0"
    model = toolkit.load_model(run)
    assert model.tok_emb.weight.shape == (257, 16)
    # The run's own sample came from the same weights, prompt, seed and greedy sampler.
    sample = (run / "sample.txt").read_text(encoding="utf-8")
    assert sample.startswith("The ") and toolkit.generate(run) == sample.removeprefix("The ")


def test_it_reports(legacy: Path, capsys):
    table = toolkit.compare(legacy)
    assert table["variant"].tolist() == ["base"] and table.iloc[0]["ok"] == 1
    assert main(["report", str(legacy), "--out", str(legacy.parent / "report")]) == 0
    assert "1 of 2 runs recorded" in capsys.readouterr().out
    # Written before runs recorded digests: checked on their scores alone.
    assert main(["verify", str(legacy)]) == 0
    assert "1 of 2 runs intact, 0 with problems, 1 not finished" in capsys.readouterr().out


def test_rerunning_its_spec_names_the_evaluation_it_changed(legacy: Path, capsys):
    # Its runs were scored on windows spread over each split; today's default is the training
    # grid, so continuing them unchanged would mix two measurements in one folder.
    before = sorted((p, p.read_bytes()) for p in legacy.rglob("*") if p.is_file())
    assert main(["run", str(DATA / "legacy.toml"), "--out", str(legacy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "train.eval_windows: spread -> grid" in err
    assert "--set train.eval_windows=spread to continue them as they were" in err
    assert sorted((p, p.read_bytes()) for p in legacy.rglob("*") if p.is_file()) == before


def test_rerunning_its_spec_skips_the_finished_run_and_resumes_the_other(legacy: Path, capsys):
    finished = (legacy / "base/seed-0/summary.json").read_text()
    spread = ["--set", "train.eval_windows=spread"]
    assert main(["run", str(DATA / "legacy.toml"), "--out", str(legacy), *spread]) == 0
    err = capsys.readouterr().err
    assert "seed=0: already finished, skipped" in err
    assert "seed=1: resuming after step 3" in err
    assert (legacy / "base/seed-0/summary.json").read_text() == finished
    summary = json.loads((legacy / "base/seed-1/summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumed_at_step"] == 3
    resumed = [json.loads(line) for line in (legacy / "base/seed-1/metrics.jsonl").open()]
    expected = [json.loads(line) for line in (DATA / "legacy-seed-1-uninterrupted.jsonl").open()]
    for got, want in zip(resumed, expected, strict=True):
        for key in ("step", "tokens", "train_loss", "val_loss", "val_bpb", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-6), key
