"""[tune]: every variant tuned on its own (on the validation split, with the tuning seeds), then
trained on every seed at its best point and reported on the test split."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import interrupting_plugins

from toolkit.analysis.table import summarize
from toolkit.cli import main
from toolkit.errors import SpecError, ToolkitError
from toolkit.names import label
from toolkit.spec.parse import parse_spec
from toolkit.spec.tune import parse_tune
from toolkit.sweep import runner
from toolkit.sweep.results import collect
from toolkit.sweep.runner import OutputLock, run
from toolkit.sweep.tuning import choose

LRS = [1e-3, 3e-3, 1e-2]


@pytest.fixture
def tuned_doc(tiny_doc) -> dict:
    tiny_doc["seeds"] = [0, 1]
    tiny_doc["data"]["test_fraction"] = 0.05
    tiny_doc["train"].pop("lr")
    tiny_doc["grid"] = {"model.norm": ["layernorm", "rmsnorm"]}
    tiny_doc["tune"] = {"train.lr": LRS}
    return tiny_doc


@pytest.mark.slow
def test_each_variant_trains_on_every_seed_at_its_own_best_point(
    tmp_path, tuned_doc, plugins, capsys
):
    table = run(parse_spec(tuned_doc), tmp_path, plugins=plugins, progress=False)
    tuning = collect(tmp_path / "tune")
    # Phase one: 2 variants x 3 learning rates x one seed the final runs do not use.
    assert len(tuning) == 6 and set(tuning["seed"]) == {1000}
    chosen = pd.read_csv(tmp_path / "tuning.csv")
    assert len(chosen) == 6 and chosen["chosen"].sum() == 2
    for norm in ("layernorm", "rmsnorm"):
        variant = f"norm={norm}"
        mine = tuning[tuning["variant"].str.startswith(f"{variant}@")]
        best = mine.loc[mine["val_loss"].idxmin()]
        folder = tmp_path / "tune" / best["variant"].replace("@", "_") / "seed-1000"
        best_lr = json.loads((folder / "config.json").read_text())["train"]["lr"]
        # Phase two: every seed, at that variant's best learning rate, with a test loss.
        finals = table[table["variant"] == variant]
        assert sorted(finals["seed"]) == [0, 1]
        for seed in (0, 1):
            config = json.loads((tmp_path / variant / f"seed-{seed}/config.json").read_text())
            assert config["train"]["lr"] == best_lr
        assert finals["test_loss"].notna().all()
        row = chosen[(chosen["variant"] == variant) & chosen["chosen"]].iloc[0]
        assert math.isclose(row["val_loss"], best["val_loss"])
    experiment = json.loads((tmp_path / "experiment.json").read_text())
    assert experiment["tune"]["values"] == {"train.lr": LRS}
    assert set(experiment["tune"]["chosen"]) == {"norm=layernorm", "norm=rmsnorm"}
    # The table toolkit.run returns says it is tuned, so summarizing it in Python compares on
    # the test split, as the report does (the validation split chose the settings).
    assert table["tuned"].all()
    assert summarize(table).attrs["metric"] == "test_loss"
    # ablate verify checks the tuning runs too: their scores chose the settings.
    assert main(["verify", str(tmp_path)]) == 0
    edited = next((tmp_path / "tune").glob("*/seed-1000/summary.json"))
    summary = json.loads(edited.read_text())
    summary["val_loss"] -= 0.5
    edited.write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path}: 4 of 4 runs intact" in out
    assert f"{tmp_path / 'tune'}: 5 of 6 runs intact, 1 with problems" in out


@pytest.mark.slow
def test_a_rerun_trains_nothing_and_gives_the_same_table(tmp_path, tuned_doc, plugins):
    first = run(parse_spec(tuned_doc), tmp_path, plugins=plugins, progress=False)
    summaries = sorted(tmp_path.glob("**/summary.json"))
    assert len(summaries) == 6 + 4
    written = [p.stat().st_mtime_ns for p in summaries]
    again = run(parse_spec(tuned_doc), tmp_path, plugins=plugins, progress=False)
    assert [p.stat().st_mtime_ns for p in summaries] == written  # nothing trained again
    columns = ["variant", "seed", "val_loss", "test_loss", "config_hash"]
    pd.testing.assert_frame_equal(first[columns], again[columns])


@pytest.mark.slow
def test_a_folder_of_an_untuned_sweep_is_refused_before_tuning_trains(tmp_path, tuned_doc, plugins):
    plain = json.loads(json.dumps(tuned_doc))
    plain.pop("tune")
    plain["train"]["lr"] = 1e-3
    run(parse_spec(plain), tmp_path, plugins=plugins, progress=False)
    written = {p: p.read_bytes() for p in tmp_path.glob("*/seed-*/summary.json")}
    assert len(written) == 4
    with pytest.raises(SpecError, match=r"holds 4 run\(s\) of this experiment trained without"):
        run(parse_spec(tuned_doc), tmp_path, plugins=plugins, progress=False)
    assert not (tmp_path / "tune").exists()  # refused before tuning trained anything
    assert {p: p.read_bytes() for p in written} == written
    # A --rerun name no final run has is refused before tuning, too.
    fresh = tmp_path / "fresh"
    with pytest.raises(SpecError, match=r"--rerun 'norm=layernrom/seed-0': no such run"):
        run(parse_spec(tuned_doc), fresh, plugins=plugins, progress=False,
            rerun=["norm=layernrom/seed-0"])  # fmt: skip
    assert not (fresh / "tune").exists()


@pytest.mark.slow
def test_failed_tuning_runs_fail_the_command_and_a_new_choice_is_said(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "fragile"\nseeds = [0]\nplugins = ["tests.executor_plugins"]\n'
        '[data]\ncorpus = "pydoc"\ntokenizer = "bytes"\ntest_fraction = 0.05\n'
        "[model]\ncontext_length = 32\nemb_dim = 32\nn_heads = 2\nn_layers = 1\n"
        '[train]\noptimizer = "fragile"\nbatch_size = 4\nmax_steps = 6\neval_interval = 3\n'
        "eval_batches = 2\n[sampling]\nmax_new_tokens = 0\n"
        '[tune]\n"train.lr" = [1e-3, 3e-3, 1e-2]\n'
    )
    out = tmp_path / "out"
    # The 1e-2 point fails: the choice is made without it, and the command says so and fails.
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "ablate: tune/base@lr=0.01 seed=1000: failed" in err
    assert "deliberate failure above lr 0.005" in err
    # Another grid changes the choice: the final runs train again, and the note says why.
    before = json.loads((out / "experiment.json").read_text())["tune"]["chosen"]["base"]
    assert before == {"train.lr": 0.003}
    grid = ["--set", "tune.train.lr=[1e-3,2e-3]"]
    assert main(["run", str(spec), "--out", str(out), "--quiet", *grid]) == 0
    err = capsys.readouterr().err
    assert re.search(
        r"note: tuning now chooses lr=0\.00[12] for base, whose final runs trained at "
        r"lr=0\.003: they train again",
        err,
    ), err


@pytest.mark.slow
def test_a_choice_at_the_edge_of_the_range_is_flagged(tmp_path, tuned_doc, plugins, capsys):
    tuned_doc["tune"] = {"train.lr": [1e-5, 2e-5]}  # far too small: the largest is best
    run(parse_spec(tuned_doc), tmp_path, plugins=plugins, progress=False)
    err = capsys.readouterr().err
    assert "the chosen train.lr (2e-05) is the largest tried; widen the [tune] range" in err


def test_tuning_seeds_are_apart_from_the_final_ones_or_warned_about(tuned_doc) -> None:
    # The default: seed 1000 (or the next free one), apart from the final seeds, and the same
    # when final seeds are added later, so the tuning runs are kept.
    spec = parse_spec(tuned_doc)
    assert spec.tune.seeds == [1000] and not spec.warnings
    tuned_doc["seeds"] = [0, 1, 2, 3]
    assert parse_spec(tuned_doc).tune.seeds == [1000]
    assert parse_tune({"train.lr": LRS}, [0, 1000, 1001], "s").seeds == [1002]
    # Tuning seeds that are final seeds train, with a warning that says what it costs.
    tuned_doc["tune"]["seeds"] = [1, 7]
    spec = parse_spec(tuned_doc)
    assert spec.tune.seeds == [1, 7]
    (warning,) = spec.warnings
    assert warning.startswith("[tune] tunes on seeds the final runs use too (1): a variant's")
    assert "e.g. seeds = [1000]" in warning


def test_a_set_of_a_key_tuning_chooses_is_refused(tuned_doc) -> None:
    with pytest.raises(SpecError, match=r"--set train\.lr: \[tune\] chooses train\.lr for each"):
        parse_spec(tuned_doc, overrides=["train.lr=0.5"])
    spec = parse_spec(tuned_doc, overrides=["tune.train.lr=[0.1, 0.2]"])
    assert spec.tune.values == {"train.lr": [0.1, 0.2]}
    # The quoted key, as grid axes are written, replaces the spec's candidates the same way.
    spec = parse_spec(tuned_doc, overrides=['tune."train.lr"=[0.1, 0.3]'])
    assert spec.tune.values == {"train.lr": [0.1, 0.3]}


def tuning_table(spec, values: dict[str, dict[float, list[float]]]) -> pd.DataFrame:
    """A tuning phase's results table: variant -> lr -> val_loss per tuning seed (in order)."""
    rows = [
        {"variant": f"{v}@lr={label(lr)}", "seed": seed, "status": "ok", "val_loss": x}
        for v, points in values.items()
        for lr, xs in points.items()
        for seed, x in zip(spec.tune.seeds, xs, strict=True)
    ]
    return pd.DataFrame(rows)


def test_a_choice_within_the_tuning_seeds_noise_is_warned_about(tuned_doc) -> None:
    tuned_doc["tune"]["seeds"] = [1000, 1001]
    tuned_doc["grid"] = {"model.norm": ["layernorm"]}
    spec = parse_spec(tuned_doc)
    # 1e-3 wins by 0.01 on the mean, but the difference is +0.06 on one seed, -0.04 on the other.
    near = {"norm=layernorm": {1e-3: [2.00, 2.10], 3e-3: [2.06, 2.06], 1e-2: [2.50, 2.50]}}
    choice = choose(spec, tuning_table(spec, near))
    assert choice.chosen == {"norm=layernorm": {"train.lr": 1e-3}}
    (warning,) = [w for w in choice.warnings if "luck" in w]
    assert warning.startswith(
        "variant 'norm=layernorm': lr=0.001 won by 0.0100 in mean val_loss over lr=0.003, less "
        "than that difference varies across the 2 tuning seeds (sd 0.0707)"
    )
    # The same gap on both seeds is no tie.
    clear = {"norm=layernorm": {1e-3: [2.00, 2.01], 3e-3: [2.05, 2.06], 1e-2: [2.50, 2.50]}}
    assert not [w for w in choose(spec, tuning_table(spec, clear)).warnings if "luck" in w]
    # One tuning seed has no spread to judge by.
    tuned_doc["tune"]["seeds"] = [1000]
    one = parse_spec(tuned_doc)
    single = {"norm=layernorm": {1e-3: [2.00], 3e-3: [2.0001], 1e-2: [2.5]}}
    assert not [w for w in choose(one, tuning_table(one, single)).warnings if "luck" in w]


def test_ranges_become_grids() -> None:
    tune = parse_tune({"train": {"lr": {"log_range": [1e-4, 1e-2], "points": 3}}}, [4, 5], "s")
    assert tune.values == {"train.lr": [1e-4, 1e-3, 1e-2]} and tune.seeds == [1000]
    tune = parse_tune(
        {"train.warmup_steps": {"range": [0, 100], "points": 3}, "seeds": [1, 2]}, [0], "s"
    )
    assert tune.values == {"train.warmup_steps": [0, 50, 100]} and tune.seeds == [1, 2]
    two = parse_tune({"train.lr": [1e-3, 2e-3], "train.warmup_steps": [0, 10]}, [0], "s")
    assert [p["train.lr"] for p in two.points()] == [1e-3, 1e-3, 2e-3, 2e-3]


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"model.emb_dim": [32, 64]}, "cannot tune 'model.emb_dim'"),
        ({"train.max_steps": [5, 10]}, "cannot tune 'train.max_steps'"),
        ({"train.lr": [1e-3]}, "needs at least 2 values"),
        ({"train.lr": [1e-3, 1e-3]}, "lists a value twice"),
        ({"train.lr": {"log_range": [0, 1e-2]}}, "log_range needs positive bounds"),
        ({"train.lr": {"log_range": [1e-2, 1e-3]}}, "with low < high"),
        ({"train.lr": {"log_range": [1e-4, float("inf")]}}, "finite numbers with low < high"),
        ({"train.lr": {"range": [1e-3, 1e-2], "points": 1}}, "points must be a whole number >= 2"),
        ({"train.lr": [1e-3, 1e-2], "metric": "test_loss"}, "metric must be one of val_loss"),
        ({"train.lr": [1e-3, 1e-2], "seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [0]}, "names no key to tune"),
    ],
)
def test_bad_tune_tables_are_one_line_errors(tuned_doc, tune, message) -> None:
    tuned_doc["tune"] = tune
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(tuned_doc)
    assert "\n" not in str(info.value)


def test_a_tuned_spec_needs_a_test_split_and_leaves_tuned_keys_to_tune(tuned_doc) -> None:
    no_test = {**tuned_doc, "data": {**tuned_doc["data"], "test_fraction": 0.0}}
    with pytest.raises(SpecError, match=r"set data\.test_fraction"):
        parse_spec(no_test)
    tuned_doc["variants"] = [{"name": "fast", "train": {"lr": 1e-2}}]
    tuned_doc.pop("grid")
    with pytest.raises(SpecError, match=r"variant 'fast' sets train\.lr, which \[tune\] chooses"):
        parse_spec(tuned_doc)


def test_a_tuned_sweep_holds_its_folder_from_the_first_tuning_run(tmp_path, tuned_doc):
    """Another sweep on the folder (here: its lock held) is refused before any tuning run is
    written; the tuning phase used to lock out/tune alone, so a second sweep trained tuning runs
    and rewrote tuning.csv beside a final phase in progress."""
    with OutputLock(tmp_path), pytest.raises(ToolkitError, match="in use by another ablate run"):
        run(parse_spec(tuned_doc), tmp_path, progress=False)
    assert not (tmp_path / "tune").exists() and not (tmp_path / "tuning.csv").exists()


@pytest.mark.slow
def test_tuning_csv_is_written_with_the_final_phases_experiment(tmp_path, tuned_doc, monkeypatch):
    """Stopped after the tuning phase, before the final phase records its runs: tuning.csv
    is not written either, so it never names a choice that experiment.json and the final
    runs do not have (the report read a new choice beside final runs of the old one)."""
    real = runner.write_experiment

    def stop_at_the_final_phase(spec, out):
        if Path(out) == tmp_path:
            raise KeyboardInterrupt
        real(spec, out)

    monkeypatch.setattr(runner, "write_experiment", stop_at_the_final_phase)
    with pytest.raises(KeyboardInterrupt):
        run(parse_spec(tuned_doc), tmp_path, progress=False)
    assert (tmp_path / "tune" / "experiment.json").is_file()
    assert not (tmp_path / "tuning.csv").exists()
    monkeypatch.undo()
    run(parse_spec(tuned_doc), tmp_path, progress=False)
    assert (tmp_path / "tuning.csv").is_file()


@pytest.mark.slow
def test_an_interrupted_tuning_phase_resumes_to_the_same_tables(tmp_path, tuned_doc):
    whole = run(parse_spec(tuned_doc), tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run(
            parse_spec(tuned_doc), tmp_path / "cut", plugins=interrupting_plugins(3), progress=False
        )
    assert not (tmp_path / "cut/tuning.csv").exists()  # stopped inside the tuning phase
    resumed = run(parse_spec(tuned_doc), tmp_path / "cut", progress=False)
    columns = ["variant", "seed", "val_loss", "test_loss", "config_hash"]
    pd.testing.assert_frame_equal(whole[columns], resumed[columns])
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "whole/tuning.csv"), pd.read_csv(tmp_path / "cut/tuning.csv")
    )


@pytest.mark.slow
def test_a_variant_with_its_own_candidates_tunes_over_them(tmp_path, tuned_doc, plugins):
    """SGD and Adam want learning rates orders of magnitude apart: [tune.variants.NAME] gives
    a variant its own grid, in place of the shared one."""
    own = [0.03, 0.1]
    tuned_doc["tune"]["variants"] = {"norm=rmsnorm": {"train.lr": own}}
    spec = parse_spec(tuned_doc)
    assert spec.tune.points("norm=rmsnorm") == [{"train.lr": v} for v in own]
    assert spec.tune.points("norm=layernorm") == [{"train.lr": v} for v in LRS]
    assert spec.tune.n_runs([v.name for v in spec.variants]) == 3 + 2
    run(spec, tmp_path, plugins=plugins, progress=False)
    tuning = collect(tmp_path / "tune")
    rms = tuning[tuning["variant"].str.startswith("norm=rmsnorm@")]
    assert sorted(rms["variant"]) == ["norm=rmsnorm@lr=0.03", "norm=rmsnorm@lr=0.1"]
    chosen = pd.read_csv(tmp_path / "tuning.csv")
    assert chosen[chosen["variant"] == "norm=rmsnorm"]["train.lr"].tolist() == own
    config = json.loads((tmp_path / "norm=rmsnorm/seed-1/config.json").read_text())
    assert config["train"]["lr"] in own
    experiment = json.loads((tmp_path / "experiment.json").read_text())
    assert experiment["tune"]["variants"] == {"norm=rmsnorm": {"train.lr": own}}


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"norm=rmsnrm": {"train.lr": [0.1, 0.3]}}, r"names 'norm=rmsnrm', which is not a variant \(did you mean 'norm=rmsnorm'\?\)"),
        ({"norm=rmsnorm": {"model.emb_dim": [16, 32]}}, r"\[tune.variants.norm=rmsnorm\]: \[tune\] cannot tune 'model.emb_dim'"),
        ({"norm=rmsnorm": {"train.lr": [0.1]}}, r"\[tune.variants.norm=rmsnorm\]: \[tune\] train.lr needs at least 2 values"),
        ({"norm=rmsnorm": {}}, r"\[tune.variants.norm=rmsnorm\] names no key to tune"),
        ({"norm=rmsnorm": {"train.optimizer.momentum": [0.5, 0.9]}}, r"train.optimizer 'adamw' takes no option 'momentum'"),
        ({"norm=rmsnorm": [0.1, 0.3]}, r"\[tune\] variants must be tables"),
    ],
)  # fmt: skip
def test_bad_own_candidates_are_one_line_errors(tuned_doc, variants, message):
    tuned_doc["tune"]["variants"] = variants
    with pytest.raises(SpecError, match=message):
        parse_spec(tuned_doc)


@pytest.mark.slow
def test_an_optimizer_option_is_tuned_in_a_variants_own_grid(tmp_path, tuned_doc, plugins):
    tuned_doc.pop("grid")
    tuned_doc["variants"] = [{"name": "adamw"}, {"name": "sgd", "train.optimizer": "sgd"}]
    tuned_doc["tune"]["variants"] = {
        "sgd": {"train.lr": [0.1, 0.3], "train.optimizer.momentum": [0.5, 0.9]}
    }
    spec = parse_spec(tuned_doc)
    assert len(spec.tune.points("sgd")) == 4 and len(spec.tune.points("adamw")) == 3
    run(spec, tmp_path, plugins=plugins, progress=False)
    chosen = pd.read_csv(tmp_path / "tuning.csv")
    best = chosen[(chosen["variant"] == "sgd") & chosen["chosen"]].iloc[0]
    config = json.loads((tmp_path / "sgd/seed-1/config.json").read_text())
    assert config["train"]["optimizer"]["name"] == "sgd"
    assert config["train"]["optimizer"]["momentum"] == best["train.optimizer.momentum"]
    assert config["train"]["lr"] == best["train.lr"]
