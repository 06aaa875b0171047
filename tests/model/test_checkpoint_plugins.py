"""A run whose components came from a plugin: its config.json names the plugin modules (outside
the config hash), and opening its checkpoint without them is a one-line error that says which
to pass with --plugin."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from tests.conftest import small_toml, write_spec
from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import ComponentError
from toolkit.model.checkpoint import load_model, save_checkpoint
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec

BUILT_IN = "dyt, layernorm, none, rmsnorm, scalenorm, torch-layernorm"
MODULE = "ckpt_norm_plugin"  # a name no other test imports: sys.modules keeps it
PLUGIN = textwrap.dedent('''
    """A plugin norm, for tests/model/test_checkpoint_plugins.py."""
    from torch import nn

    from toolkit import hookimpl


    @hookimpl
    def register_components(register):
        register("normalization", "ckpt-norm", lambda dim: nn.LayerNorm(dim), description="x")
''')


class Norms:
    @hookimpl
    def register_components(self, register):
        register("normalization", "ckpt-norm", lambda dim: nn.LayerNorm(dim), description="x")


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """MODULE, importable from tmp_path, the current folder (as `ablate` users run it)."""
    (tmp_path / f"{MODULE}.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield MODULE
    sys.modules.pop(MODULE, None)


def saved_run(folder: Path, recorded: list[str] | None) -> Path:
    """A run folder whose model uses the plugin norm; config.json records `recorded` (None:
    no plugins key, as runs before it)."""
    with_norms = Plugins(autoload=False)
    with_norms.add(Norms(), name="my_norms")
    config = ModelConfig(
        vocab_size=32, context_length=8, emb_dim=8, n_heads=2, n_layers=1, norm="ckpt-norm"
    )
    state = build_model(config, with_norms).state_dict()
    folder.mkdir(parents=True)
    save_checkpoint(config, state, folder / "checkpoint.pt")
    run = {"model_resolved": config.to_dict()}
    if recorded is not None:
        run["plugins"] = recorded
    (folder / "config.json").write_text(json.dumps(run))
    return folder


def test_the_error_names_the_plugins_the_run_recorded(tmp_path, plugins):
    run = saved_run(tmp_path / "run", ["my_norms"])
    with pytest.raises(ComponentError) as info:
        load_model(run, plugins)
    assert str(info.value) == (
        f"checkpoint {run / 'checkpoint.pt'}: its normalization 'ckpt-norm' is not registered "
        f"(registered: {BUILT_IN}); its run trained with plugin my_norms: pass --plugin "
        f"my_norms as when it trained (from the folder that holds it)"
    )


def test_a_run_that_recorded_no_plugins_is_told_a_plugin_may_be_missing(tmp_path, plugins):
    run = saved_run(tmp_path / "run", None)
    with pytest.raises(ComponentError) as info:
        load_model(run, plugins)
    assert str(info.value).endswith(
        "its normalization 'ckpt-norm' is not registered (registered: "
        f"{BUILT_IN}); if it came from a plugin, pass --plugin MODULE as when it trained "
        "(from the folder that holds it)"
    )


def test_a_recorded_plugin_that_no_longer_registers_it_is_said_so(tmp_path):
    class Renamed:
        @hookimpl
        def register_components(self, register):
            register("normalization", "ckpt-norm-2", lambda dim: nn.LayerNorm(dim))

    changed = Plugins(autoload=False)
    changed.add(Renamed(), name="my_norms")
    with pytest.raises(ComponentError) as info:
        load_model(saved_run(tmp_path / "run", ["my_norms"]), changed)
    assert str(info.value).endswith(
        "its run's plugin my_norms is loaded but registers no normalization 'ckpt-norm' now; "
        "load the version the run trained with"
    )


def test_with_the_plugin_loaded_it_opens(tmp_path):
    with_norms = Plugins(autoload=False)
    with_norms.add(Norms(), name="my_norms")
    model = load_model(saved_run(tmp_path / "run", ["my_norms"]), with_norms)
    assert isinstance(model.trf_blocks[0].norm1, nn.LayerNorm)


def test_a_run_records_the_plugin_modules_of_its_components_outside_the_hash(
    tiny_doc, plugin_module
):
    loaded = Plugins([plugin_module], autoload=False, source="--plugin")
    doc = {**tiny_doc, "grid": {"model.norm": ["layernorm", "ckpt-norm"]}}
    builtin, mine = parse_spec(doc, plugins=loaded).runs
    assert (builtin.plugins, mine.plugins) == ([], [plugin_module])
    assert "plugins" not in builtin.config()
    assert mine.config()["plugins"] == [plugin_module]
    hash_before = mine.config_hash()
    mine.plugins = []
    assert mine.config_hash() == hash_before


@pytest.mark.slow  # trains a run (about a second) and generates from it
def test_generate_from_a_plugin_run_says_which_plugin_to_pass(tmp_path, capsys, plugin_module):
    text = small_toml("plugged", model='norm = "ckpt-norm"')
    spec = write_spec(tmp_path / "spec.toml", text)
    assert main(["run", str(spec), "--plugin", plugin_module, "--quiet"]) == 0
    run = Path("runs/plugged/base/seed-0")
    assert json.loads((run / "config.json").read_text())["plugins"] == [plugin_module]
    capsys.readouterr()
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.endswith(
        f"its run trained with plugin {plugin_module}: pass --plugin {plugin_module} as when "
        f"it trained (from the folder that holds it)\n"
    )
    assert main(["generate", str(run), "--max-new-tokens", "2", "--plugin", plugin_module]) == 0
