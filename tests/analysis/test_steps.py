"""The steps of cumulative variants (toolkit.analysis.steps): each variant against the one it
builds on, from a results table and from run folders, checked against scipy; and a sweep
without `after` reports exactly as before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from toolkit.analysis.load import load
from toolkit.analysis.render import write_report
from toolkit.analysis.sections import format_steps
from toolkit.analysis.steps import STEP_COLUMNS, add_steps, describe_keys, steps_view
from toolkit.analysis.table import summarize
from toolkit.analysis.text import report
from toolkit.files import write_json
from toolkit.names import run_folder


def runs(values: dict[str, list[float]], after: dict[str, str], baseline: str = "gpt2"):
    """A runs table: variant -> final val_loss per seed (None: no such seed), in spec order,
    with the `after` and `changes` columns load.py reads from config.json."""
    rows = [
        {
            "variant": v,
            "seed": s,
            "status": "ok",
            "baseline": v == baseline,
            "val_loss": x,
            "val_perplexity": math.exp(x),
            "val_bpb": x / math.log(2),
            "train_loss": x + 0.1,
            "params": 10,
            "params_non_embedding": 5,
            "tokens_per_s": 100.0,
            "causal": True,
            "after": after.get(v, ""),
            "changes": f"model.x={v}" if v in after else "",
        }
        for v, xs in values.items()
        for s, x in enumerate(xs)
        if x is not None
    ]
    return pd.DataFrame(rows)


CHAIN = {
    "gpt2": [3.00, 3.10, 3.05, 2.95],
    "rope": [2.90, 2.97, 2.96, 2.88],
    "rmsnorm": [2.80, 2.90, 2.86, 2.79],
    "lr": [3.20, 3.00, 3.10, 3.40],  # no after: a variant of the base, outside the chain
}
AFTER = {"rope": "gpt2", "rmsnorm": "rope"}


def test_each_step_is_tested_against_the_variant_it_builds_on():
    s = summarize(runs(CHAIN, AFTER)).set_index("variant")
    assert s.attrs["steps"] == ["gpt2", "rope", "rmsnorm"]  # the spec's order, not by loss
    step = s.loc["rmsnorm"]
    assert step["after"] == "rope" and step["changes"] == "model.x=rmsnorm"
    assert step["delta_step"] == pytest.approx(np.mean(CHAIN["rmsnorm"]) - np.mean(CHAIN["rope"]))
    ref = sp.ttest_rel(CHAIN["rmsnorm"], CHAIN["rope"])
    assert step["test_step"] == "paired t" and step["p_step"] == pytest.approx(ref.pvalue)
    d = np.subtract(CHAIN["rmsnorm"], CHAIN["rope"])
    low, high = sp.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sp.sem(d))
    assert (step["delta_step_ci_low"], step["delta_step_ci_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    # The running total is the table's delta against the baseline, and the steps add up to it.
    assert s.loc["rope", "delta_step"] + step["delta_step"] == pytest.approx(step["delta"])
    assert s.loc["rope", "delta_step"] == pytest.approx(s.loc["rope", "delta"])
    # Outside a chain, and at its start, there is no step.
    for v in ("gpt2", "lr"):
        assert s.loc[v, "after"] == "" and math.isnan(s.loc[v, "delta_step"])
        assert s.loc[v, "test_step"] == "" and math.isnan(s.loc[v, "p_step"])


def test_welch_without_shared_seeds_and_no_test_with_one_seed():
    values = {
        "gpt2": [3.0, 3.1, 3.2],
        "rope": [None, None, None, 2.9, 2.8, 3.0],  # seeds 3-5: none shared with gpt2
        "rms": [None, None, None, 2.7],  # one seed
    }
    s = summarize(runs(values, {"rope": "gpt2", "rms": "rope"})).set_index("variant")
    rope = s.loc["rope"]
    a, b = [2.9, 2.8, 3.0], [3.0, 3.1, 3.2]
    ref = sp.ttest_ind(a, b, equal_var=False)
    assert rope["test_step"] == "Welch t" and rope["p_step"] == pytest.approx(ref.pvalue)
    se = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    df = se**4 / ((np.var(a, ddof=1) / 3) ** 2 / 2 + (np.var(b, ddof=1) / 3) ** 2 / 2)
    half = sp.t.ppf(0.975, df) * se
    delta = np.mean(a) - np.mean(b)
    assert rope["delta_step_ci_low"] == pytest.approx(delta - half)
    assert rope["delta_step_ci_high"] == pytest.approx(delta + half)
    rms = s.loc["rms"]
    assert rms["delta_step"] == pytest.approx(2.7 - np.mean(a))
    assert rms["test_step"] == "" and math.isnan(rms["p_step"])
    assert math.isnan(rms["delta_step_ci_low"])
    text = format_steps(summarize(runs(values, {"rope": "gpt2", "rms": "rope"})))
    assert text.startswith("steps, each variant against the one it builds on (val_loss):")
    row = next(line for line in text.splitlines() if line.lstrip(" *").startswith("rms "))
    assert row.split()[1:4] == ["rope", "model.x=rms", f"{2.7 - np.mean(a):+.4f}"]


def test_a_step_whose_sides_finished_other_seeds_reports_the_paired_difference():
    """rope lost seed 3: its step over gpt2 is the mean of the three paired differences, inside
    its own interval, not the difference of a 3-seed and a 4-seed mean."""
    values = {"gpt2": [3.00, 3.10, 3.05, 2.50], "rope": [2.90, 2.97, 2.96, None]}
    rope = summarize(runs(values, {"rope": "gpt2"})).set_index("variant").loc["rope"]
    d = np.subtract([2.90, 2.97, 2.96], [3.00, 3.10, 3.05])
    assert rope["delta_step"] == pytest.approx(d.mean())
    assert rope["delta_step_ci_low"] < rope["delta_step"] < rope["delta_step_ci_high"]
    assert rope["delta_step"] == pytest.approx(rope["delta"])  # a step from the baseline


def test_a_table_without_after_is_returned_as_it_is():
    table = runs(CHAIN, {}).drop(columns=["after", "changes"])
    s = summarize(table)
    assert not set(STEP_COLUMNS) & set(s.columns) and "steps" not in s.attrs
    assert add_steps(s, table, {}) is s
    assert format_steps(s) == "" and steps_view(s).empty
    # An `after` column that names nothing (a folder pooled with a chain's) is no chain either.
    assert add_steps(s, runs(CHAIN, {}), {}) is s


def test_the_view_follows_the_spec_order_even_read_back_from_csv(tmp_path):
    s = summarize(runs(CHAIN, AFTER))
    assert steps_view(s)["variant"].tolist() == ["gpt2", "rope", "rmsnorm"]
    s.to_csv(tmp_path / "summary.csv", index=False)
    back = pd.read_csv(tmp_path / "summary.csv")  # no attrs: in the table's order
    assert sorted(steps_view(back)["variant"]) == ["gpt2", "rmsnorm", "rope"]
    assert describe_keys({"model.norm": {"name": "rmsnorm", "eps": 1e-6}, "train.lr": 0.001}) == (
        "model.norm=rmsnorm(eps=1e-06), train.lr=0.001"
    )


# -- from run folders, as `ablate run` leaves them -------------------------------------------------


def fake_chain(
    folder: Path,
    name: str,
    losses: dict[str, list[float]],
    own: dict[str, dict],
    after: dict[str, str],
    baseline: str = "gpt2",
) -> Path:
    """An experiment folder without training: variant -> final val_loss per seed, each
    variant's own keys, and what it builds on, recorded as RunSpec.config() records them."""
    variants, entries = list(losses), []
    for variant, values in losses.items():
        for seed, loss in enumerate(values):
            digest = f"base-{seed}" if variant == baseline else f"{name}-{variant}-{seed}"
            run = {"variant": variant, "seed": seed, "folder": run_folder(variant, seed)}
            entries.append({**run, "config_hash": digest})
            config = {"experiment": name, **run, "overrides": own[variant]}
            if variant in after:
                config |= {"after": after[variant], "own_overrides": own[variant]}
            write_json(folder / run["folder"] / "config.json", config)
            write_json(
                folder / run["folder"] / "summary.json",
                {"experiment": name, "variant": variant, "seed": seed, "status": "ok",
                 "tokenizer": "bytes", "causal": True, "params": 100,
                 "params_non_embedding": 50, "train_loss": loss + 0.1, "val_loss": loss,
                 "val_perplexity": math.exp(loss), "val_bpb": loss / math.log(2),
                 "tokens_per_s": 10.0, "wall_s": 1.0, "config_hash": digest,
                 "baseline": variant == baseline},
            )  # fmt: skip
    write_json(
        folder / "experiment.json",
        {"name": name, "baseline": baseline, "variants": variants, "runs": entries},
    )
    return folder


OWN = {
    "gpt2": {},
    "rope": {"model.positional": "rope"},
    "rmsnorm": {"model.norm": {"name": "rmsnorm", "eps": 1e-6}},
}


def test_steps_from_run_folders_in_every_report(tmp_path):
    losses = {k: CHAIN[k] for k in OWN}
    folder = fake_chain(tmp_path / "exp", "exp", losses, OWN, {"rope": "gpt2", "rmsnorm": "rope"})
    table = load(folder).runs
    assert table.groupby("variant")["after"].first().to_dict() == {
        "gpt2": "",
        "rope": "gpt2",
        "rmsnorm": "rope",
    }
    assert set(table.loc[table["variant"] == "rmsnorm", "changes"]) == {
        "model.norm=rmsnorm(eps=1e-06)"
    }

    summary, text = report(folder)
    ref = sp.ttest_rel(CHAIN["rmsnorm"], CHAIN["rope"]).pvalue
    steps = text[text.index("steps, each variant") :].splitlines()
    assert steps[2].split()[:4] == ["*", "gpt2", "-", "-"]
    assert steps[3].split()[:3] == ["rope", "gpt2", "model.positional=rope"]
    rms = steps[4].split()
    assert rms[:3] == ["rmsnorm", "rope", "model.norm=rmsnorm(eps=1e-06)"]
    step = summary.set_index("variant").loc["rmsnorm"]
    assert rms[3] == f"{step['delta_step']:+.4f}" and rms[6] == f"{ref:.3f}"
    assert rms[7] == f"{step['delta']:+.4f}"

    result = write_report(folder, tmp_path / "rep", figures=False)
    md = result.markdown.read_text()
    assert "## Steps" in md
    assert "| **gpt2 (baseline)** | - | - |" in md
    assert f"| rmsnorm | rope | model.norm=rmsnorm(eps=1e-06) | {step['delta_step']:+.4f} |" in md
    assert "<h2>Steps</h2>" in result.html.read_text()
    csv = pd.read_csv(tmp_path / "rep" / "report_summary.csv").set_index("variant")
    assert csv.loc["rmsnorm", "p_step"] == pytest.approx(ref)


def test_a_folder_without_after_reports_as_before(tmp_path):
    folder = fake_chain(tmp_path / "exp", "exp", {k: CHAIN[k] for k in OWN}, OWN, {})
    table = load(folder).runs
    assert "after" not in table and "changes" not in table
    result = write_report(folder, tmp_path / "rep", figures=False)
    assert "Steps" not in result.markdown.read_text() and "steps" not in result.text
    assert not set(STEP_COLUMNS) & set(result.summary.columns)


def test_several_folders_name_what_a_step_builds_on_as_the_report_does(tmp_path):
    a = fake_chain(tmp_path / "a", "plain", {"gpt2": [3.0, 3.1], "lr": [2.9, 3.0]},
                   {"gpt2": {}, "lr": {"train.lr": 0.01}}, {})  # fmt: skip
    b = fake_chain(tmp_path / "b", "modern", {k: CHAIN[k] for k in OWN}, OWN,
                   {"rope": "gpt2", "rmsnorm": "rope"})  # fmt: skip
    both = load([a, b])
    s = summarize(both.runs, both.baseline).set_index("variant")
    assert s.loc["modern/rope", "after"] == "gpt2"  # the shared baseline
    assert s.loc["modern/rmsnorm", "after"] == "modern/rope"
    assert s.loc["plain/lr", "after"] == "" and math.isnan(s.loc["plain/lr", "delta_step"])
    rope = s.loc["modern/rope"]
    assert rope["delta_step"] == pytest.approx(
        np.mean(CHAIN["rope"]) - s.loc["gpt2", "val_loss_mean"]
    )
