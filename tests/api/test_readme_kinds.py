"""README.md's list of kinds is KINDS rendered (kinds_markdown), and every example in it is a real
plugin: it registers one component without a warning, the component builds as its kind's
contract says on tiny sizes, and it passes the conformance checks."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.api.contracts import TrainConfig
from toolkit.api.kinds import KINDS, README_END, kinds_markdown, with_kinds
from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.testing import check_component

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m toolkit.api.kinds --readme README.md"


def test_the_readme_lists_every_kind_as_kinds_markdown_renders_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == with_kinds(readme), (
        f"README.md's kinds (between <!-- kinds:start and {README_END}) differ from KINDS in "
        f"toolkit/api/kinds.py: run `{REGENERATE}` from the repository root"
    )
    for kind in KINDS.values():
        assert f"**{kind.name}**: `{kind.call}`" in kinds_markdown()


def test_the_regenerate_command_rewrites_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- kinds:start -->\nstale\n<!-- kinds:end -->\n\nAfter.\n")
    subprocess.run(
        [sys.executable, "-m", "toolkit.api.kinds", "--readme", str(readme)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- kinds:start") and text.endswith(
        f"{kinds_markdown()}\n{README_END}\n\nAfter.\n"
    )
    assert "stale" not in text and with_kinds(text) == text
    with pytest.raises(ValueError, match=r"no .* block to fill"):
        with_kinds("# no markers\n")


def example_plugins(kind: str) -> tuple[Plugins, str]:
    """The built-ins plus the kind's README example as a plugin, and the name it registers."""
    module = types.ModuleType(f"readme_{kind}_example")
    code = compile(KINDS[kind].example, f"<README example of {kind}>", "exec")
    exec(code, module.__dict__)
    plugins = Plugins(autoload=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an example that warns teaches the wrong thing
        plugins.add(module, name=module.__name__)
    registered = plugins.info[module.__name__].components
    assert len(registered) == 1 and registered[0][0] == kind, registered
    return plugins, registered[0][1]


TINY = ModelConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_example_registers_a_component_that_builds(kind: str) -> None:
    plugins, name = example_plugins(kind)
    component = plugins.registry.get(kind, name)
    arguments = {"config": TINY, "dim": TINY.emb_dim, "model": build_model(TINY, plugins)}
    arguments.update(step=3, total_steps=10)  # a schedule's
    if kind == "optimizer":  # an optimizer's config is the run's training settings
        arguments["config"] = TrainConfig(1e-3, (0.9, 0.95), 0.1, "matrices")
    built = component.build(*(arguments[a] for a in KINDS[kind].arg_names))
    x = torch.randn(2, 5, TINY.emb_dim)
    if kind in ("attention", "normalization", "activation", "positional"):
        assert isinstance(built, nn.Module) and built(x).shape == x.shape
    elif kind == "init":
        assert built is None
    elif kind == "optimizer":
        assert isinstance(built, torch.optim.Optimizer)
    elif kind == "schedule":
        assert isinstance(built, float) and 0 <= built <= 1
    elif kind == "sampler":
        ids = built(torch.randn(2, 7), torch.Generator().manual_seed(0))
        assert ids.shape == (2, 1) and ids.dtype == torch.int64
    elif kind == "tokenizer":
        assert built.decode(built.encode("héllo")) == "héllo"
    elif kind == "corpus":
        assert any(text for _, text in built.documents())
    else:
        assert callable(built.prepare) and callable(built.execute)


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k == "executor" else k for k in KINDS]
)
def test_every_example_passes_the_conformance_checks(kind: str) -> None:
    plugins, name = example_plugins(kind)
    check_component(kind, name, plugins, max_examples=3)
