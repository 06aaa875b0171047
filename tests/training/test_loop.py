from __future__ import annotations

import json
import math

import pytest
import torch

from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.training.throughput import cpu_name


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_same_seed_same_losses_and_other_seed_differs(tmp_path, tiny_doc, plugins):
    tiny_doc["seeds"] = [0, 1]
    tiny_doc["model"]["drop_rate"] = 0.1  # dropout must be seeded too
    spec = parse_spec(tiny_doc)
    first = run(spec, tmp_path / "a", plugins=plugins, progress=False)
    again = run(spec, tmp_path / "b", plugins=plugins, progress=False)
    assert first["val_loss"].tolist() == again["val_loss"].tolist()
    assert read_metrics(tmp_path / "a/base/seed-0") == [
        {**m, "elapsed_s": a["elapsed_s"], "train_s": a["train_s"]}
        for m, a in zip(
            read_metrics(tmp_path / "b/base/seed-0"),
            read_metrics(tmp_path / "a/base/seed-0"),
            strict=True,
        )
    ]
    assert first["val_loss"].iloc[0] != first["val_loss"].iloc[1]


def test_run_folder_is_self_describing(tmp_path, tiny_doc, plugins):
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    folder = tmp_path / "base/seed-0"
    for name in [
        "config.json",
        "env.json",
        "metrics.jsonl",
        "summary.json",
        "sample.txt",
        "checkpoint.pt",
    ]:
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["emb_dim"] == 32 and config["model_resolved"]["vocab_size"] == 257
    env = json.loads((folder / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0 and env["device"] == "cpu"
    assert env["cpu"] == cpu_name() and env["cpu"]  # the model name where the OS gives one
    metrics = read_metrics(folder)
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
        assert m["tokens"] == m["step"] * 4 * 32
    row = table.iloc[0]
    assert row["status"] == "ok" and row["val_loss"] == metrics[-1]["val_loss"]
    assert row["params"] > row["params_non_embedding"] > 0
    assert row["tokens_per_s"] > 0 and row["wall_s"] >= row["train_s"] > 0
    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["emb_dim"] == 32 and "tok_emb.weight" in checkpoint["model"]


def test_bits_per_byte_definition(tmp_path, tiny_doc, plugins):
    # Byte tokenizer: every token but end-of-text is one byte, so bpb is about loss / ln 2.
    run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    last = read_metrics(tmp_path / "base/seed-0")[-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2), rel=0.02)
    assert last["val_bpb"] >= last["val_loss"] / math.log(2)  # EOT tokens add loss, no bytes


def test_training_reduces_loss(tmp_path, tiny_doc, plugins):
    tiny_doc["train"].update(max_steps=40, eval_interval=40)
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert table["val_loss"].iloc[0] < math.log(257) - 1.0


def test_observer_hooks_called_at_start_eval_and_end(tmp_path, tiny_doc):
    calls = []

    class Recorder:
        @hookimpl
        def on_run_start(self, run):
            calls.append(("start", run.variant, run.params))

        @hookimpl
        def on_eval(self, run, step, metrics):
            calls.append(("eval", step, round(metrics["val_loss"], 6)))

        @hookimpl
        def on_run_end(self, run, summary):
            calls.append(("end", summary["status"]))

    plugins = Plugins(autoload=False)
    plugins.add(Recorder(), name="recorder")
    run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins, progress=False)
    assert [c[0] for c in calls] == ["start", "eval", "eval", "end"]
    assert [c[1] for c in calls if c[0] == "eval"] == [3, 6]
    assert calls[-1] == ("end", "ok")


def test_budget_in_tokens_and_epochs(tmp_path, tiny_doc, plugins):
    tiny_doc["train"].pop("max_steps")
    tiny_doc["train"]["max_tokens"] = 4 * 32 * 5  # five steps of 4 x 32 tokens
    table = run(parse_spec(tiny_doc), tmp_path / "t", plugins=plugins, progress=False)
    assert table["steps"].iloc[0] == 5 and table["tokens"].iloc[0] == 640


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_doc):
    from torch import nn

    class Exploding(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.lin = nn.Linear(config.emb_dim, config.emb_dim)

        def forward(self, x):
            # Only on real data: the forward pass the sweep probes every architecture with
            # before training runs on the meta device, so the run itself fails.
            if x.device.type != "meta":
                raise RuntimeError("kaboom")
            return self.lin(x)

    class Plugin:
        @hookimpl
        def register_components(self, register):
            register("activation", "exploding", Exploding)

    plugins = Plugins(autoload=False)
    plugins.add(Plugin(), name="exploding-plugin")
    tiny_doc["grid"] = {"model.activation": ["exploding", "gelu"]}
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["failed", "ok"]
    error = (tmp_path / "activation=exploding/seed-0/error.txt").read_text()
    assert "activation 'exploding' (plugin 'exploding-plugin') raised in forward" in error
    assert "RuntimeError: kaboom" in error


def test_budget_in_epochs(tmp_path, tiny_doc, plugins):
    from toolkit.data.batches import TrainBatches
    from toolkit.data.tokens import load_tokens

    spec = parse_spec(
        {**tiny_doc, "train": {**tiny_doc["train"], "max_steps": None, "epochs": 0.01}}
    )
    r = spec.runs[0]
    corpus = plugins.registry.get("corpus", "pydoc").build()
    data = load_tokens(corpus, plugins.registry.get("tokenizer", "bytes").build(), 0.1)
    per_epoch = TrainBatches(data.train, 32, 4, 0).batches_per_epoch
    table = run(spec, tmp_path, plugins=plugins, progress=False)
    assert r.train.epochs == 0.01
    assert table["steps"].iloc[0] == math.ceil(0.01 * per_epoch)


def test_table_ignores_folders_left_by_an_earlier_spec(tmp_path, tiny_doc, plugins):
    tiny_doc["grid"] = {"model.norm": ["layernorm", "rmsnorm"]}
    run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    tiny_doc["grid"] = {"model.norm": ["layernorm"]}
    tiny_doc["train"]["lr"] = 1e-3  # changes the config: the old layernorm run is stale too
    finished = (tmp_path / "norm=layernorm/seed-0/summary.json").read_text()
    with pytest.raises(
        SpecError, match=r"other settings \(train\.lr: 0\.003 -> 0\.001\); .*--restart"
    ):
        run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert (tmp_path / "norm=layernorm/seed-0/summary.json").read_text() == finished  # untouched
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False, restart=True)
    assert table["variant"].tolist() == ["norm=layernorm"]
    assert (
        tmp_path / "norm=rmsnorm/seed-0/summary.json"
    ).exists()  # kept on disk, not in the table
    assert (
        json.loads((tmp_path / "norm=layernorm/seed-0/config.json").read_text())["train"]["lr"]
        == 1e-3
    )


class NaNWhenEvaluated(torch.nn.Module):
    """A feed-forward whose evaluation outputs are NaN: training goes on, the scores do not."""

    def __init__(self, config):
        super().__init__()
        self.lin = torch.nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        return self.lin(x) if self.training else self.lin(x) * float("nan")


def test_non_finite_scores_are_written_as_null_and_read_back_as_nan(tmp_path, tiny_doc, capsys):
    class Plugin:
        @hookimpl
        def register_components(self, register):
            register("activation", "nan-eval", NaNWhenEvaluated)

    plugins = Plugins(autoload=False)
    plugins.add(Plugin(), name="nan-eval-plugin")
    tiny_doc["model"]["activation"] = "nan-eval"
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins)
    assert "val nan" in capsys.readouterr().err  # the progress line says so

    def strict(text: str) -> object:  # what JavaScript's JSON.parse and jq accept
        def refuse(constant: str) -> None:
            raise ValueError(f"bare {constant} is not JSON")

        return json.loads(text, parse_constant=refuse)

    folder = tmp_path / "base/seed-0"
    summary = strict((folder / "summary.json").read_text())
    lines = [strict(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert summary["val_loss"] is None and all(m["val_loss"] is None for m in lines)
    assert summary["status"] == "ok" and summary["steps"] == 6  # training itself went on
    assert math.isnan(table["val_loss"].iloc[0])
