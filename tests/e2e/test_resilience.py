"""Sweeps survive interruption, divergence and broken components, losing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from tests.conftest import interrupting_plugins, write_spec
from toolkit.analysis.text import report
from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import DataError
from toolkit.model.checkpoint import load_model, read_checkpoint
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import OutputLock, run
from toolkit.training.resume import RESUME_FILE, truncate_metrics

ROOT = Path(__file__).resolve().parents[2]


def metrics(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "train_s")} for x in lines
    ]


def resumable_doc(tiny_doc: dict) -> dict:
    tiny_doc["model"]["drop_rate"] = 0.2  # dropout draws from the RNG: resuming must restore it
    tiny_doc["train"].update(max_steps=9, eval_interval=3)
    return tiny_doc


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, tiny_doc, plugins):
    spec = parse_spec(resumable_doc(tiny_doc))
    whole = run(spec, tmp_path / "whole", plugins=plugins, progress=False)

    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "cut", plugins=interrupting_plugins(6), progress=False)
    folder = tmp_path / "cut/base/seed-0"
    assert (folder / RESUME_FILE).exists() and not (folder / "summary.json").exists()
    assert [m["step"] for m in metrics(folder)] == [3, 6]

    resumed = run(spec, tmp_path / "cut", plugins=plugins, progress=False)
    assert metrics(folder) == metrics(tmp_path / "whole/base/seed-0")
    assert resumed["val_loss"].tolist() == whole["val_loss"].tolist()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_at_step"] == 6  # saved at the evaluation the interruption hit
    assert not (folder / RESUME_FILE).exists()  # finished: the resume state is gone


def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    spec = write_spec(
        tmp_path / "kill.toml",
        """
name = "kill"
seeds = [0, 1]
[data]
tokenizer = "bytes"
[model]
context_length = 32
emb_dim = 32
n_heads = 2
n_layers = 2
drop_rate = 0.1
[train]
batch_size = 8
max_steps = 60
eval_interval = 4
eval_batches = 2
threads = 1
[sampling]
sampler = "greedy"
max_new_tokens = 4
[grid]
"model.norm" = ["layernorm", "rmsnorm"]
""",
    )

    def ablate_run(out: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(out), "--quiet"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    killed = tmp_path / "killed"
    proc = ablate_run(killed)
    second = killed / "norm=rmsnorm/seed-0"
    deadline = time.monotonic() + 240
    while not (second / RESUME_FILE).exists():  # the first run done, the second mid-way
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.csv").exists() or len(pd.read_csv(killed / "results.csv")) < 4

    assert ablate_run(killed).wait() == 0
    whole = tmp_path / "whole"
    assert ablate_run(whole).wait() == 0
    columns = ["variant", "seed", "status", "steps", "train_loss", "val_loss", "val_bpb"]
    pd.testing.assert_frame_equal(
        pd.read_csv(killed / "results.csv")[columns], pd.read_csv(whole / "results.csv")[columns]
    )
    for folder in ["norm=layernorm/seed-0", "norm=rmsnorm/seed-0", "norm=rmsnorm/seed-1"]:
        assert metrics(killed / folder) == metrics(whole / folder)


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path, tiny_doc, capsys):
    spec = write_spec(
        tmp_path / "s.toml",
        '[data]\ntokenizer = "bytes"\n[model]\ncontext_length = 16\n'
        "emb_dim = 16\nn_heads = 2\nn_layers = 1\n[train]\nmax_steps = 2\n",
    )
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is in use by another ablate run (pid" in err and err.count("\n") == 1
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0  # released afterwards


def test_restart_discards_earlier_runs_after_saying_so(tmp_path, tiny_doc, plugins, capsys):
    spec = parse_spec(tiny_doc)
    run(spec, tmp_path, plugins=plugins, progress=False)
    marker = tmp_path / "base/seed-0/marker"
    marker.write_text("old")
    run(spec, tmp_path, plugins=plugins, progress=False, restart=True)
    assert "restart: discarding 1 earlier run folder(s)" in capsys.readouterr().err
    assert not marker.exists() and (tmp_path / "base/seed-0/summary.json").exists()


class NaNAfter(nn.Module):
    """Feed-forward that starts returning NaN after a few training calls"""

    calls = 0

    def __init__(self, config):
        super().__init__()
        self.lin = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        if self.training and x.device.type != "meta":  # training steps, not the probe
            NaNAfter.calls += 1
        out = self.lin(x)
        return out * float("nan") if NaNAfter.calls > 3 else out


def test_divergence_is_recorded_with_its_step_and_the_sweep_goes_on(tmp_path, tiny_doc):
    class Plugin:
        @hookimpl
        def register_components(self, register):
            register("activation", "nan-after", NaNAfter)

    plugins = Plugins(autoload=False)
    plugins.add(Plugin(), name="nan-plugin")
    tiny_doc["model"]["n_layers"] = 1
    tiny_doc["grid"] = {"model.activation": ["nan-after", "gelu"]}
    NaNAfter.calls = 0
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["diverged", "ok"]
    summary = json.loads((tmp_path / "activation=nan-after/seed-0/summary.json").read_text())
    assert summary["diverged_at_step"] == 4
    _, text = report(tmp_path)
    assert "diverged" in text


def test_exit_status_is_1_with_a_summary_when_a_run_fails(tmp_path, capsys, monkeypatch):
    (tmp_path / "boom_plugin.py").write_text(
        "from torch import nn\nfrom toolkit import hookimpl\n\n"
        "class Boom(nn.Module):\n    def __init__(self, config):\n        super().__init__()\n"
        "        self.lin = nn.Linear(config.emb_dim, config.emb_dim)\n"
        "    def forward(self, x):\n        if x.device.type == 'meta':\n"
        "            return self.lin(x)\n"
        "        raise ValueError('broken forward')\n\n"
        "@hookimpl\ndef register_components(register):\n    register('activation', 'boom', Boom)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = write_spec(
        tmp_path / "s.toml",
        "plugins = ['boom_plugin']\n[data]\ntokenizer = \"bytes\"\n"
        "[model]\ncontext_length = 16\nemb_dim = 16\nn_heads = 2\nn_layers = 1\n"
        '[train]\nmax_steps = 2\n[grid]\n"model.activation" = ["boom", "gelu"]\n',
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "activation=boom seed=0: failed (activation 'boom' (plugin 'boom_plugin')" in err
    assert "ValueError: broken forward)" in err
    sys.modules.pop("boom_plugin", None)


def test_checkpoints_load_weights_only_and_bad_ones_are_clear_errors(tmp_path, tiny_doc, plugins):
    run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    path = tmp_path / "base/seed-0/checkpoint.pt"
    model = load_model(path, plugins)
    assert model.tok_emb.weight.shape == (257, 32)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt or not a toolkit checkpoint"):
        read_checkpoint(corrupt)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["emb_dim"] = 64
    checkpoint["config"]["n_heads"] = 2
    mismatched = tmp_path / "mismatched.pt"
    torch.save(checkpoint, mismatched)
    with pytest.raises(DataError, match="weights do not match its config"):
        load_model(mismatched, plugins)
    with pytest.raises(DataError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")


def test_a_corrupt_resume_state_means_the_run_starts_over(tmp_path, tiny_doc, plugins, capsys):
    spec = parse_spec(resumable_doc(tiny_doc))
    whole = run(spec, tmp_path / "whole", plugins=plugins, progress=False)
    folder = tmp_path / "cut/base/seed-0"
    folder.mkdir(parents=True)
    (folder / RESUME_FILE).write_bytes(b"not a checkpoint")
    (folder / "metrics.jsonl").write_text('{"step": 3, "val_loss": 1.0}\n{"step": 6, "val_')
    capsys.readouterr()
    again = run(spec, tmp_path / "cut", plugins=plugins, progress=False)
    assert again["val_loss"].tolist() == whole["val_loss"].tolist()
    assert metrics(folder) == metrics(tmp_path / "whole/base/seed-0")
    err = capsys.readouterr().err  # said, not silent
    assert f"{folder / RESUME_FILE} cannot be read" in err and "starts over from step 0" in err


def test_data_changed_since_a_run_trained_is_refused_and_never_resumed_on(
    tmp_path, tiny_doc, plugins, capsys
):
    """A data.path file edited between an interrupted run and the same command again (the
    same length, so its batches still line up): the sweep names the runs and stops before
    training, instead of resuming on other tokens. --restart trains on the new data; a resume
    state saved on other tokens is never resumed from."""
    data = tmp_path / "data.txt"
    words = " ".join(f"word{i % 97} of {i % 13}" for i in range(3000))
    data.write_text(words)
    tiny_doc["data"] = {"path": str(data), "tokenizer": "bytes", "val_fraction": 0.1}
    tiny_doc["seeds"] = [0, 1]
    spec = parse_spec(resumable_doc(tiny_doc))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(spec, out, plugins=interrupting_plugins(6), progress=False)
    folder = out / "base/seed-0"
    assert (folder / RESUME_FILE).exists()
    data.write_text(words[::-1])  # other text, as many bytes
    capsys.readouterr()
    assert main(["run", str(write_spec(tmp_path / "s.toml", _toml(tiny_doc))), "--out",
                 str(out), "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 run(s) of this spec trained on other data" in err
    assert "base/seed-0" in err and "--restart" in err
    assert (folder / RESUME_FILE).exists()  # nothing touched
    # Under the check (a config.json lost, say): the state of other tokens is not resumed.
    (folder / "config.json").unlink()
    again = run(spec, out, plugins=plugins, progress=False)
    assert "was saved on other data (the corpus changed since)" in capsys.readouterr().err
    fresh = run(spec, tmp_path / "fresh", plugins=plugins, progress=False)
    assert again["val_loss"].tolist() == fresh["val_loss"].tolist()


def _toml(doc: dict) -> str:
    """A spec document as TOML text (flat tables of plain values)."""
    lines = [f'name = "{doc["name"]}"', f"seeds = {doc['seeds']}"]
    for section in ("data", "model", "train", "sampling"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in doc.get(section, {}).items()]
    return "\n".join(lines) + "\n"


def test_a_cut_off_metrics_line_is_reported_when_the_run_resumes(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 3, "val_loss": 1.0}\n{"step": 6, "val_')
    assert truncate_metrics(path, 6) == {"step": 3, "val_loss": 1.0}
    assert "line 2 is cut off or garbled; the evaluations after step 3 up to 6 are lost" in (
        capsys.readouterr().err
    )
    assert path.read_text() == '{"step": 3, "val_loss": 1.0}\n'
    path.write_text('{"step": 3}\n{"step": 6}\n{"step": 9, "val_')  # killed after step 6
    assert truncate_metrics(path, 6) == {"step": 6} and capsys.readouterr().err == ""


def test_variant_names_cannot_write_outside_the_output_folder(tmp_path, tiny_doc, plugins):
    tiny_doc["variants"] = [{"name": "../../escape"}, {"name": "/abs/path"}]
    table = run(parse_spec(tiny_doc), tmp_path / "out", plugins=plugins, progress=False)
    assert set(table["status"]) == {"ok"}
    written = {p.resolve() for p in (tmp_path / "out").rglob("summary.json")}
    assert len(written) == 2
    assert all((tmp_path / "out").resolve() in p.parents for p in written)
    assert not (tmp_path / "escape").exists()


def test_a_resumed_run_keeps_the_precision_auto_chose_when_it_began(
    tmp_path, tiny_doc, plugins, monkeypatch
):
    from toolkit.training import throughput

    tiny_doc = resumable_doc(tiny_doc)
    tiny_doc["train"]["precision"] = "auto"
    spec = parse_spec(tiny_doc)
    # This process measures bf16 as the faster; the next one (here: after the interruption)
    # measures fp32 as the faster. The run began in bf16 and must end in it.
    monkeypatch.setattr(throughput, "_PEAKS", {})
    threads = torch.get_num_threads()
    throughput.adopt_peaks((("fp32", threads, 1e11), ("bf16-mixed", threads, 5e11)))
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path, plugins=interrupting_plugins(6), progress=False)
    throughput.adopt_peaks((("fp32", threads, 5e11), ("bf16-mixed", threads, 1e11)))
    table = run(spec, tmp_path, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"]
    assert table["precision"].tolist() == ["bf16-mixed"]
    assert table["peak_flops"].tolist() == [1e11]  # bf16's peak as measured now
    # A new run in this process resolves the other way: the choice came from the resume state.
    fresh = run(spec, tmp_path / "fresh", plugins=plugins, progress=False)
    assert fresh["precision"].tolist() == ["fp32"]
