"""The report of a tuned sweep (its tuning phase, the test split) and of a ladder (its scaling
fits), from real tiny sweeps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from toolkit.analysis.comparison import compare
from toolkit.analysis.render import write_report
from toolkit.analysis.text import report
from toolkit.errors import ToolkitError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, plugins):
    doc = {
        "name": "tuned", "seeds": [0, 1],
        "data": {"corpus": "pydoc", "tokenizer": "bytes", "test_fraction": 0.05},
        "model": {"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0},
        "train": {"batch_size": 4, "max_steps": 6, "eval_interval": 3, "eval_batches": 2},
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.norm": ["layernorm", "rmsnorm"]},
        "tune": {"train.lr": [1e-4, 3e-3, 1e-2]},
    }  # fmt: skip
    out = tmp_path_factory.mktemp("tuned")
    run(parse_spec(doc), out, plugins=plugins, progress=False)
    return out


@pytest.mark.slow
def test_a_tuned_sweep_is_compared_on_its_test_split(tuned) -> None:
    summary, text = report(tuned)
    assert summary.attrs["metric"] == "test_loss"
    assert summary["test_loss_mean"].notna().all()
    assert "tuned: every variant trained at its own settings" in text
    assert "tuned norm=layernorm: lr=" in text
    # The notebook view says it too.
    assert "which no choice saw" in compare(tuned)._repr_html_()


@pytest.mark.slow
def test_the_report_shows_the_tuning_table_and_figure(tuned, tmp_path) -> None:
    result = write_report(tuned, tmp_path)
    md = result.markdown.read_text()
    assert "## Tuning (tuned)" in md and "mean val_loss" in md
    assert "the comparison is on the held-out test split" in md
    assert (tmp_path / "figures/tuning-tuned.png").stat().st_size > 1000
    chosen = pd.read_csv(tuned / "tuning.csv")
    assert chosen["chosen"].sum() == 2


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, plugins):
    doc = {
        "name": "ladder", "seeds": [0, 1],
        "data": {"corpus": "pydoc", "tokenizer": "bytes", "test_fraction": 0.05},
        "model": {"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0},
        "train": {"batch_size": 4, "eval_interval": 5, "eval_batches": 2, "lr": 3e-3},
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.activation": ["gelu", "relu"]},
        "ladder": {
            "sizes": [{"emb_dim": 16, "n_layers": 1, "n_heads": 2},
                      {"emb_dim": 32, "n_layers": 1, "n_heads": 2},
                      {"emb_dim": 48, "n_layers": 2, "n_heads": 2}],
            "tokens": [1280, 1920, 2560], "target_flops": 1e11, "metric": "test_loss",
        },
    }  # fmt: skip
    out = tmp_path_factory.mktemp("ladder")
    run(parse_spec(doc), out, plugins=plugins, progress=False)
    return out


@pytest.mark.slow
def test_a_ladder_reports_compute_multipliers_and_compares_its_largest_size(ladder, tmp_path):
    summary, text = report(ladder)
    # The Results table: the largest size only, each variant against the baseline there.
    assert sorted(summary["variant"]) == ["activation=gelu@d48-L2-h2", "activation=relu@d48-L2-h2"]
    # ... on the metric the ladder fits, and toolkit.compare gives the same table.
    assert summary.attrs["metric"] == "test_loss" and summary["test_loss_mean"].notna().all()
    assert "test_loss: the metric the spec's [ladder] names" in text and "tuned" not in text
    pd.testing.assert_frame_equal(pd.DataFrame(compare(ladder)), summary)
    # Another baseline must be one the table compares: a variant at the largest size.
    with pytest.raises(ToolkitError, match=r"is not at the ladder's largest size, .* give "):
        report(ladder, baseline="activation=relu@d16-L1-h2")
    rebased, _ = report(ladder, baseline="activation=relu@d48-L2-h2")
    assert rebased.set_index("variant").loc["activation=relu@d48-L2-h2", "baseline"]
    # A folder from before specs refused a loss ladder across tokenizers: bits per byte.
    mixed = tmp_path / "mixed"
    shutil.copytree(ladder, mixed)
    for path in mixed.glob("activation=relu*/seed-*/summary.json"):
        path.write_text(path.read_text().replace('"tokenizer": "bytes"', '"tokenizer": "bpe"'))
    summary, text = report(mixed)
    assert summary.attrs["metric"] == "test_bpb"
    assert "different tokenizers, so they are compared by test_bpb" in text
    assert (
        "its final test_bpb is fitted" in write_report(mixed, tmp_path / "m").markdown.read_text()
    )
    assert "scaling (compute multiplier against the baseline; > 1 is better):" in text
    assert "activation=gelu: x1.00" in text and "activation=relu: x" in text
    assert "at the largest size, " in text and "so far" not in text
    assert (
        "2 seeds at a size: the bootstrap's 95% interval covers the true multiplier about 78%"
        in text
    )
    # Before its largest size has run, the report says so rather than "no finished runs".
    partial = tmp_path / "partial"
    shutil.copytree(ladder, partial)
    for summary_file in partial.glob("*_d48-L2-h2/seed-*/summary.json"):
        summary_file.unlink()
    _, text = report(partial)
    assert "(no finished run at the ladder's largest size yet)" in text
    assert "at the largest size trained so far" in text
    result = write_report(ladder, tmp_path)
    md = result.markdown.read_text()
    assert "## Scaling" in md and "multiplier at largest" in md
    # Three sizes fit a pure power law (fewer than 4 computes), and the report says so.
    assert "power" in md
    assert (tmp_path / "figures/scaling.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_report_says_what_each_variant_needed_to_reach_the_target(tmp_path, plugins):
    doc = {
        "name": "target", "seeds": [0, 1],
        "data": {"corpus": "pydoc", "tokenizer": "bytes"},
        "model": {"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0},
        "train": {"batch_size": 4, "max_steps": 12, "eval_interval": 2, "eval_batches": 2,
                  "lr": 3e-3, "target_loss": 10.0},  # met at the first evaluation
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.activation": ["gelu", "relu"]},
    }  # fmt: skip
    table = run(parse_spec(doc), tmp_path / "runs", plugins=plugins, progress=False)
    _, text = report(tmp_path / "runs")
    assert "time to val_loss <= 10 (mean over seeds that reached it):" in text
    assert (table["target_tokens"] == 2 * 4 * 32).all()  # step 2 of batch 4 x 32 tokens
    line = next(x for x in text.splitlines() if x.startswith("  activation=relu:"))
    assert line.startswith("  activation=relu: 2/2 seeds, 256 tokens, ")
    assert line.endswith("x1.000 the baseline's FLOPs")  # the same FLOPs per token
    md = write_report(tmp_path / "runs", tmp_path / "report").markdown.read_text()
    assert "## Time to target (validation loss 10)" in md


@pytest.mark.slow
def test_variants_tuning_other_keys_get_their_own_panel_and_table_cells(tmp_path):
    from toolkit.analysis.phases import edge_warnings, tuned_keys, tuning_figure

    tune = {
        "values": {"train.lr": [1e-3, 1e-2]},
        "variants": {"muon": {"train.optimizer.muon_lr": [0.01, 0.04]}},
        "metric": "val_loss",
    }
    table = pd.DataFrame([
        {"variant": "adamw", "train.lr": 1e-3, "val_loss": 2.0, "chosen": False},
        {"variant": "adamw", "train.lr": 1e-2, "val_loss": 1.5, "chosen": True},
        {"variant": "muon", "train.optimizer.muon_lr": 0.01, "val_loss": 1.4, "chosen": False},
        {"variant": "muon", "train.optimizer.muon_lr": 0.04, "val_loss": 1.2, "chosen": True},
    ])  # fmt: skip
    assert tuned_keys(tune) == ["train.lr", "train.optimizer.muon_lr"]
    figure = tuning_figure(table, tune, "opt", tmp_path)
    assert figure.path.is_file()
    assert "train.lr and train.optimizer.muon_lr" in figure.title
    # Each variant's edges are judged on its own grid: both chose their largest value.
    warnings = edge_warnings(table, tune)
    assert (
        len(warnings) == 2
        and "variant 'muon': the chosen train.optimizer.muon_lr (0.04)" in warnings[1]
    )


def test_the_tuning_section_warns_of_a_near_tie_from_the_seeds_own_values(monkeypatch):
    from toolkit.analysis import phases

    # tuning.csv holds the means; the tuning runs hold each seed's value.
    table = pd.DataFrame([
        {"variant": "adamw", "point": "lr=0.003", "val_loss": 2.4842, "chosen": False},
        {"variant": "adamw", "point": "lr=0.009487", "val_loss": 2.4732, "chosen": True},
        {"variant": "lion", "point": "lr=0.001", "val_loss": 2.5053, "chosen": True},
        {"variant": "lion", "point": "lr=0.003", "val_loss": 2.5378, "chosen": False},
    ])  # fmt: skip
    values = {
        "adamw@lr=0.003": (2.4872, 2.4811), "adamw@lr=0.009487": (2.4885, 2.4578),
        "lion@lr=0.001": (2.5074, 2.5033), "lion@lr=0.003": (2.5473, 2.5282),
    }  # fmt: skip
    runs = pd.DataFrame([
        {"variant": v, "seed": seed, "status": "ok", "val_loss": x}
        for v, xs in values.items() for seed, x in zip((1000, 1001), xs, strict=True)
    ])  # fmt: skip
    monkeypatch.setattr(phases, "collect", lambda folder: runs)
    tune = {"seeds": [1000, 1001], "metric": "val_loss"}
    (warning,) = phases.tie_warnings(table, tune, Path("unused"))
    assert warning.startswith(
        "variant 'adamw': lr=0.009487 won by 0.0110 in mean val_loss over lr=0.003, less than "
        "that difference varies across the 2 tuning seeds (sd 0.0174)"
    )
    assert phases.tie_warnings(table, {**tune, "seeds": [1000]}, Path("unused")) == []  # one seed
