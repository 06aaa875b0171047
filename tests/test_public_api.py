"""The public Python API, `toolkit.*`: every name resolves, build_model is strict about its
keys, and load_model, generate and evaluate give what the commands give."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import TINY

import toolkit
from toolkit.cli import main
from toolkit.errors import ComponentError
from toolkit.spec.parse import parse_spec


def test_every_public_name_resolves():
    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = toolkit.nope


def test_build_model_takes_a_preset_and_refuses_unknown_keys():
    with torch.device("meta"):
        nano = toolkit.build_model({"preset": "nano", "drop_rate": 0.0})
        assert (nano.config.emb_dim, nano.config.n_layers, nano.config.drop_rate) == (64, 2, 0.0)
        assert nano.config == toolkit.preset("nano", drop_rate=0.0)
        # Before, both of these silently built the default (GPT-2 small) model.
        with pytest.raises(ComponentError, match=r"no key 'emb_dimm' \(did you mean 'emb_dim'"):
            toolkit.build_model({"emb_dimm": 5})
        with pytest.raises(ComponentError, match="unknown preset 'gpt2-smol'"):
            toolkit.build_model({"preset": "gpt2-smol"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = copy.deepcopy(TINY)
    doc["sampling"] = {"sampler": "greedy", "prompt": "def ", "max_new_tokens": 6}
    out = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
        table = toolkit.run(parse_spec(doc), out, progress=False)
    assert table["status"].tolist() == ["ok"]
    return out / "base" / "seed-0"


@pytest.mark.slow
def test_load_model_generate_and_evaluate_match_the_commands(trained, capsys):
    model = toolkit.load_model(trained)
    assert not model.training and model.tok_emb.weight.shape == (257, 32)
    assert torch.equal(toolkit.load_model(trained / "checkpoint.pt").tok_emb.weight,
                       model.tok_emb.weight)  # fmt: skip

    text = toolkit.generate(trained)  # the run's prompt, sampler (greedy) and length
    assert main(["generate", str(trained)]) == 0
    assert capsys.readouterr().out == "def " + text + "\n"
    assert toolkit.generate(trained, "def ", max_new_tokens=0) == ""

    scores = toolkit.evaluate(trained)
    assert scores.split == "val" and scores.tokenizer == "bytes"
    assert main(["eval", str(trained)]) == 0
    out = capsys.readouterr().out
    assert f"loss {scores.results['val']['loss']:.4f}" in out
    both = toolkit.evaluate(trained, split="all")
    assert set(both.results) == {"train", "val", "all"}
    assert both.results["val"] == scores.results["val"]
