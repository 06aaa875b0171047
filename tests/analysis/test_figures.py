"""The report of a real (tiny) sweep: its files exist and parse, its figures are real images;
and the figures of odd sweeps (one seed, three grid axes, mixed tokenizers) still draw."""

from __future__ import annotations

import base64
import copy
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY
from toolkit.analysis.figures import make_figures
from toolkit.analysis.load import load
from toolkit.analysis.render import write_report
from toolkit.analysis.table import summarize
from toolkit.api.manager import Plugins
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

pytestmark = pytest.mark.slow  # every test here trains a sweep and draws its figures


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 variants x 2 seeds of a 1-layer model, a few steps each: a few seconds."""
    doc = copy.deepcopy(TINY)
    doc["seeds"] = [0, 1]
    doc["grid"] = {"model.norm": ["layernorm", "rmsnorm"]}
    doc["train"] |= {"max_steps": 4, "eval_interval": 2, "eval_batches": 1, "checkpoint": False}
    doc["sampling"]["max_new_tokens"] = 0
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    with pytest.MonkeyPatch.context() as mp:  # the same isolation as conftest's autouse fixture
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
        plugins = Plugins(autoload=False)
        run(parse_spec(doc, plugins=plugins), out, plugins=plugins, progress=False)
    return out


@pytest.fixture(scope="module")
def written(sweep_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return write_report(sweep_dir, tmp_path_factory.mktemp("report"))


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_report_files_exist_and_parse(written):
    folder = written.folder
    for name in ("report.md", "report.html", "report_runs.csv", "report_summary.csv"):
        assert (folder / name).is_file(), name
    runs = pd.read_csv(folder / "report_runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    assert runs["flops_per_token"].gt(0).all()
    summary = pd.read_csv(folder / "report_summary.csv")
    assert summary["variant"].tolist() == written.summary["variant"].tolist()
    assert summary["ok"].tolist() == [2, 2] and summary["test"].fillna("").tolist().count("") == 1
    curves = pd.read_csv(folder / "report_curves.csv")
    assert len(curves) == 4 * 2  # 4 runs x evaluations at steps 2 and 4
    assert {"variant", "seed", "step", "tokens", "val_loss", "train_loss"} <= set(curves.columns)


def test_markdown_holds_the_table_and_links_the_figures(written):
    md = written.markdown.read_text(encoding="utf-8")
    assert md.startswith("# Ablation report: tiny")
    assert "| variant | seeds | val loss (nats/token) |" in md
    assert "**norm=layernorm (baseline)**" in md and "| norm=rmsnorm |" in md
    assert "paired t" in md and "## What the sweep could resolve" in md
    links = [line[line.index("](") + 2 : -1] for line in md.splitlines() if line.startswith("![")]
    assert len(links) == len(written.figures) >= 5
    for link in links:
        assert (written.folder / link).is_file(), link


def test_html_is_self_contained_with_the_figures_embedded(written):
    page = Page()
    page.feed(written.html.read_text(encoding="utf-8"))
    page.close()
    assert "table" in page.tags and "script" not in page.tags and "link" not in page.tags
    assert len(page.images) == len(written.figures)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    assert "norm=rmsnorm" in text and "What the sweep could resolve" in text
    assert "http://" not in written.html.read_text() and "https://" not in written.html.read_text()


def test_figures_are_real_images(written):
    names = {p.name for p in written.figures}
    assert {"curves.png", "final.png", "params.png", "throughput.png", "gap.png"} <= names
    assert any(n.startswith("grid-") for n in names) is False  # one axis: no pair to map
    for path in written.figures:
        image = matplotlib.image.imread(path)
        height, width = image.shape[:2]
        assert width >= 600 and height >= 250, path.name
        assert path.stat().st_size > 10_000, path.name
        assert float(np.std(image[..., :3])) > 0.05, path.name  # not a blank canvas


def test_terminal_text_and_two_copies_of_a_real_sweep(written, sweep_dir, tmp_path):
    assert "experiment tiny: 4 of 4 runs recorded" in written.text and "± " in written.text
    copy_dir = tmp_path / "again"
    shutil.copytree(sweep_dir, copy_dir)
    sweep = load([sweep_dir, copy_dir])  # the same experiment name twice: named by folder
    labels = sorted(sweep.runs["variant"].unique())
    assert labels == ["again/norm=rmsnorm", "norm=layernorm", "tiny/norm=rmsnorm"]
    s = summarize(sweep.runs, sweep.baseline, asked=sweep.asked).set_index("variant")
    assert s.loc["norm=layernorm", "ok"] == 2  # the copies' baseline runs pooled by seed


def synthetic(values: dict[str, list[float]], **columns) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A runs table and its curves (two evaluations per run) without training."""
    runs, curves = [], []
    for v, xs in values.items():
        for seed, x in enumerate(xs):
            runs.append(
                {"variant": v, "seed": seed, "status": "ok", "val_loss": x, "train_loss": x - 0.1,
                 "val_perplexity": math.exp(x), "val_bpb": x / math.log(2), "params": 1000,
                 "params_non_embedding": 800, "tokens_per_s": 100.0, "wall_s": 1.0,
                 "causal": True, "baseline": v == next(iter(values)), **columns.get(v, {})}
            )  # fmt: skip
            for step in (1, 2):
                curves.append(
                    {"variant": v, "seed": seed, "status": "ok", "tokens": 100 * step,
                     "val_loss": x + 1 / step, "train_loss": x - 0.1 + 1 / step,
                     "val_bpb": (x + 1 / step) / math.log(2)}
                )  # fmt: skip
    return pd.DataFrame(runs), pd.DataFrame(curves)


def test_a_three_axis_grid_gets_a_heatmap_per_pair(tmp_path):
    cells = {
        f"n={n},a={a},p={p}": {"n": n, "a": a, "p": p}
        for n in ("ln", "rms")
        for a in ("gelu", "relu")
        for p in ("learned", "rope")
    }
    values = {v: [2.0 + 0.01 * i] for i, v in enumerate(cells)}  # one seed: no intervals
    runs, curves = synthetic(values, **cells)
    summary = summarize(runs)
    made = make_figures(runs, summary, curves, [("grid", ["n", "a", "p"], runs)], tmp_path)
    grids = sorted(f.path.name for f in made if f.path.name.startswith("grid-"))
    assert grids == ["grid-grid-a-x-p.png", "grid-grid-n-x-a.png", "grid-grid-n-x-p.png"]
    assert all(f.title and f.caption for f in made)
    assert all(matplotlib.image.imread(f.path).shape[0] > 100 for f in made)


def test_mixed_tokenizers_plot_bits_per_byte(tmp_path):
    runs, curves = synthetic(
        {"bytes": [1.0, 1.1], "gpt2": [3.0, 3.1]},
        bytes={"tokenizer": "bytes"},
        gpt2={"tokenizer": "gpt2"},
    )
    summary = summarize(runs)
    assert summary.attrs["metric"] == "val_bpb"
    made = make_figures(runs, summary, curves, [], tmp_path)
    titles = [f.title for f in made]
    assert "Validation bits per byte during training" in titles
    assert "Final validation bits per byte per variant" in titles
