"""The README's plugin example is real: extract it, load it from a spec, train with it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from toolkit.api.manager import Plugins
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_plugin_example_runs_from_a_spec(tmp_path, monkeypatch, tiny_doc):
    code = re.search(r"```python\n(# my_components\.py\n.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "my_components.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(autoload=False)
    doc = {**tiny_doc, "plugins": ["my_components"]}
    doc["model"]["activation"] = {"name": "bilinear", "hidden_mult": 2.0}
    spec = parse_spec(doc, plugins=plugins)
    assert plugins.registry.get("activation", "bilinear").plugin == "my_components"
    table = run(spec, tmp_path / "out", plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"] and table["activation"].tolist() == ["bilinear"]
    sys.modules.pop("my_components", None)


def test_readme_conformance_example_passes_on_the_readme_plugin(tmp_path, monkeypatch):
    text = README.read_text()
    plugin = re.search(r"```python\n(# my_components\.py\n.*?)```", text, re.S).group(1)
    (tmp_path / "my_components.py").write_text(plugin)
    example = re.search(r"```python\n(from toolkit import Plugins\n.*?)```", text, re.S).group(1)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    test()  # raises ConformanceError if the README's plugin broke the contract
    sys.modules.pop("my_components", None)


def test_readme_notebook_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The README's notebook cell, as written, on a quick start trained small (its variants and
    folder names are the real ones); the comparison renders as the report's table."""
    import toolkit

    overrides = [
        "model.emb_dim=32", "model.n_layers=1", "model.n_heads=2", "model.context_length=32",
        "train.max_steps=4", "train.eval_interval=2", "train.eval_batches=1",
        "train.batch_size=4", "sampling.max_new_tokens=4",
    ]  # fmt: skip
    spec = toolkit.load_spec(Path(__file__).resolve().parents[2] / "experiments/quickstart.toml",
                             overrides)  # fmt: skip
    toolkit.run(spec, tmp_path / "runs" / "quickstart", progress=False)
    code = re.search(r"```python\n(# notebook walkthrough\n.*?)```", README.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith(" parameters") and printed[-1].startswith("val loss ")
    table = namespace["table"]
    assert len(table) == 4 and table["baseline"].sum() == 1
    html = table._repr_html_()  # what Jupyter shows for a cell's last value
    assert html.startswith('<div class="ablate-comparison">') and "<table>" in html
    assert all(v in html for v in table["variant"])
    assert "Δ vs baseline" in html and "95% confidence interval" in html
    selected = table[["variant", "val_loss_mean"]]
    assert type(selected) is pd.DataFrame  # derived frames are ordinary ones
