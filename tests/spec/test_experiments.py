"""Every ready spec in experiments/ validates, data checks included (what `ablate validate`
does), so a shipped example never rots."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.spec.parse import load_spec
from toolkit.sweep.preflight import prepare_data

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml"))


def test_the_families_the_issue_names_are_all_there():
    names = {p.stem for p in EXPERIMENTS}
    assert {
        "quickstart",
        "attention",
        "positional",
        "norms",
        "activations",
        "dropout",
        "tying",
        "tokenizers",
        "book_ch05",
        "stdlib",
        "tuned_norms",
        "ladder_activations",
        "recipe",
        "optimizers",
        "schedules",
        "moe",
    } <= names


# Each builds its models and prepares its data (the standard library's 31.5 MB takes seconds to
# tokenize the first time): only the quick start's spec stays in the inner loop.
INNER_LOOP = {"quickstart"}


@pytest.mark.parametrize(
    "path",
    [p if p.stem in INNER_LOOP else pytest.param(p, marks=pytest.mark.slow) for p in EXPERIMENTS],
    ids=lambda p: p.stem,
)
def test_experiment_validates(path, plugins):
    spec = load_spec(path, plugins=plugins)
    assert spec.runs and spec.baseline in [v.name for v in spec.variants]
    prepare_data(spec, plugins)
