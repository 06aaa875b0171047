"""The README's plugin example is real: extract it, load it from a spec, train with it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

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
