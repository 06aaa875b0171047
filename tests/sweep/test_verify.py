"""Integrity you can check: a finished run records digests of its checkpoint and metrics, and
`ablate verify` and a rerun catch a corrupt file or a hand-edited summary; a rerun trains such
a run again instead of trusting it. `--rerun VARIANT/seed-N` retrains one run on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import small_toml, write_spec

from toolkit.cli import main
from toolkit.files import digest, self_digest, write_json
from toolkit.sweep.verify import problems
from toolkit.training.resume import RESUME_FILE

SPEC = small_toml(
    "v", (0, 1), train="max_steps = 2\neval_interval = 1", sampling="max_new_tokens = 2"
)


@pytest.fixture
def sweep(tmp_path: Path, capsys) -> tuple[Path, Path]:
    spec = write_spec(tmp_path / "v.toml", SPEC)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return spec, out


def test_a_finished_run_records_what_it_wrote_and_verifies(sweep, capsys):
    _, out = sweep
    run = out / "base/seed-0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["digests"] == {
        "checkpoint.pt": digest(run / "checkpoint.pt"),
        "metrics.jsonl": digest(run / "metrics.jsonl"),
        "scores": self_digest(summary),  # the summary's own, its digests left out
    }
    assert problems(run) == []
    assert main(["verify", str(out)]) == 0
    assert "out: 2 of 2 runs intact, 0 with problems, 0 not finished" in capsys.readouterr().out
    assert "digests" not in (out / "results.csv").read_text()  # files, not results


def test_a_rerun_removes_the_resume_state_a_killed_finish_left_behind(sweep, capsys):
    """A kill between writing summary.json and removing resume.pt left the resume state of a
    finished run: the rerun skips the run and removes it; a run not finished keeps its own."""
    spec, out = sweep
    done, unfinished = out / "base/seed-0", out / "base/seed-1"
    (done / RESUME_FILE).write_bytes(b"a resume state")
    (unfinished / "summary.json").unlink()
    (unfinished / RESUME_FILE).write_bytes(b"a resume state")
    (unfinished / "checkpoint.pt").unlink()
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert "base seed=0: already finished, skipped" in capsys.readouterr().err
    assert not (done / RESUME_FILE).exists() and (done / "summary.json").exists()
    assert problems(unfinished) == []  # trained (its unreadable state said so) and finished


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_caught_and_retrained(sweep, capsys):
    spec, out = sweep
    checkpoint = out / "base/seed-1/checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])  # a disk that lost its tail
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "! base seed=1: checkpoint.pt is not the file the run wrote (corrupt or edited)" in text
    assert "  base seed=0: ok" in text
    assert main(["run", str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "seed-1: checkpoint.pt is not the file the run wrote" in err and "training it again" in err
    )
    assert "base seed=0: already finished, skipped" in err
    assert main(["verify", str(out)]) == 0
    # A summary.json that is not JSON is said too, not retrained in silence.
    (out / "base/seed-0/summary.json").write_text("{")
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "seed-0: summary.json is not JSON (corrupt?); training it again" in err
    assert main(["verify", str(out)]) == 0


def test_a_hand_edited_summary_is_not_trusted(sweep, capsys):
    spec, out = sweep
    path = out / "base/seed-0/summary.json"
    summary = json.loads(path.read_text())
    summary["val_loss"] -= 0.5  # a better result than the run had
    path.write_text(json.dumps(summary))
    assert problems(path.parent) == [
        "summary.json is not the summary the run wrote (edited?)",
        "summary.json's val_loss differ from the last evaluation in metrics.jsonl (edited?)",
    ]
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "training it again" in capsys.readouterr().err
    assert problems(path.parent) == []
    # A score no metrics.jsonl line repeats (perplexity; a tuned sweep's test_loss) is caught
    # by the summary's digest of itself.
    summary = json.loads(path.read_text())
    summary["val_perplexity"] = 2.0
    path.write_text(json.dumps(summary))
    assert problems(path.parent) == ["summary.json is not the summary the run wrote (edited?)"]
    assert main(["verify", str(out)]) == 1
    # A summary written before it digested itself is checked as before.
    del summary["digests"]["scores"]
    path.write_text(json.dumps(summary))
    assert problems(path.parent) == []


def test_rerun_trains_one_run_again_from_scratch(sweep, capsys):
    spec, out = sweep
    before = json.loads((out / "base/seed-0/summary.json").read_text())
    assert main(["run", str(spec), "--out", str(out), "--rerun", "base/seed-0"]) == 0
    err = capsys.readouterr().err
    assert "base seed=1: already finished, skipped" in err
    assert "base seed=0: already finished" not in err
    after = json.loads((out / "base/seed-0/summary.json").read_text())
    assert after["val_loss"] == before["val_loss"] and after["wall_s"] != before["wall_s"]
    assert main(["run", str(spec), "--out", str(out), "--rerun", "bsae/seed-0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rerun 'bsae/seed-0': no such run" in err
    assert "did you mean 'base/seed-0'" in err


def test_verify_needs_an_experiment_folder(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "is not an experiment folder: it holds no experiment.json" in capsys.readouterr().err
    (tmp_path / "experiment.json").write_text("{bad")
    assert main(["verify", str(tmp_path)]) == 2
    assert "has an experiment.json that is not JSON with its runs" in capsys.readouterr().err


def test_report_refuses_run_folders_without_their_experiment_json(sweep, capsys):
    """experiment.json says which run folders are the spec's: without it (or with it
    damaged) a report would mix in runs an earlier spec left, so it refuses, as verify does;
    the spec run again writes it back and trains nothing."""
    spec, out = sweep
    kept = (out / "experiment.json").read_bytes()
    for damage, words in ((None, "but no experiment.json"), (b"{", "but a damaged experiment")):
        if damage is None:
            (out / "experiment.json").unlink()
        else:
            (out / "experiment.json").write_bytes(damage)
        capsys.readouterr()
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and f"ablate run SPEC --out {out}" in err
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "training" not in capsys.readouterr().err
    assert (out / "experiment.json").read_bytes() == kept
    assert main(["report", str(out)]) == 0


def test_a_broken_config_or_a_summary_of_another_run_is_caught(sweep, capsys):
    spec, out = sweep
    config = out / "base/seed-0/config.json"
    good = config.read_text()
    config.write_text("{bad")
    summary_path = out / "base/seed-1/summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(status=None, seed="x")
    summary_path.write_text(json.dumps(summary))
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "! base seed=0: config.json is missing or not JSON" in text
    assert "summary.json's seed not what experiment.json records" in text
    assert "summary.json has no status" in text
    assert "0 of 2 runs intact, 2 with problems" in text
    # A rerun trains both again rather than trust them.
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "base/seed-0: config.json is missing or not JSON; training it again" in (
        capsys.readouterr().err
    )
    assert main(["verify", str(out)]) == 0
    # A config.json of another config beside the summary is not this run's either (and a
    # rerun stops at it, as at any run of other settings).
    held = json.loads(good)
    held["config_hash"] = "0" * 16
    config.write_text(json.dumps(held))
    assert problems(config.parent) == [
        "config.json is not this run's (its config_hash is not summary.json's)"
    ]


def test_a_sweep_stopped_in_its_tuning_phase_is_said_to_be_one(tmp_path, capsys):
    write_json(tmp_path / "tune" / "experiment.json", {"name": "t", "runs": []})
    assert main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "a tuned sweep stopped in its tuning phase; its final runs have not started" in out
    assert f"{tmp_path / 'tune'}: 0 of 0 runs intact" in out
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a tuned sweep stopped in its tuning phase" in err and "\n" not in err.strip()
