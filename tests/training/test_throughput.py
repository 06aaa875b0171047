"""Training options for speed: bf16 autocast, torch.compile with a fallback, device "auto",
and the throughput columns (FLOPs per token, MFU)."""

from __future__ import annotations

import pytest
import torch

from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.training import throughput
from toolkit.training.throughput import (
    flops_per_token,
    matmul_params,
    peak_flops,
    resolve_device,
    resolve_precision,
)


def test_flops_per_token_counts_matrix_weights_and_attention(plugins):
    cfg = ModelConfig(
        vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2, tie_embeddings=True
    )
    model = build_model(cfg, plugins)
    per_layer = 4 * 32 * 32 + 2 * 32 * 4 * 32  # q, k, v, out; two feed-forward matrices
    assert matmul_params(model) == 2 * per_layer + 100 * 32  # the tied head is a matrix product too
    assert flops_per_token(model) == 6 * (2 * per_layer + 100 * 32) + 12 * 2 * 32 * 16


def test_peak_is_measured_and_cached():
    first = peak_flops("cpu", "fp32", size=256)
    assert first > 1e8  # any CPU from this century does 0.1 GFLOP/s
    assert peak_flops("cpu", "fp32", size=256) == first


@pytest.mark.parametrize(("gflops", "measured_at"), [(100.0, 1024), (1.0, 256)])
def test_a_cpu_without_native_kernels_is_measured_on_smaller_products(
    gflops, measured_at, monkeypatch
):
    """bfloat16 on an AVX2-only CPU runs at about 1 GFLOP/s: 24 products of 1024 x 1024 would
    take 50 s, so a probe sends the measurement to 256 x 256."""
    sizes = []

    def seconds(device, precision, n, repeats):
        sizes.append((n, repeats))
        return 2 * n**3 / (gflops * 1e9)

    monkeypatch.setattr(throughput, "_best_seconds", seconds)
    assert throughput.matmul_flops("cpu", "bf16-mixed") == pytest.approx(gflops * 1e9)
    assert sizes == [(256, 2), (measured_at, 24)]
    sizes.clear()
    throughput.matmul_flops("cpu", "fp32", size=512)  # a size given is the size measured
    assert sizes == [(512, 24)]


def test_cpu_peak_measures_at_the_thread_count_asked_and_restores_this_processs(monkeypatch):
    seen = []

    def measure(device, precision, size=None):
        seen.append((device, precision, torch.get_num_threads()))
        return 1e11

    monkeypatch.setattr(throughput, "_PEAKS", {})
    monkeypatch.setattr(throughput, "matmul_flops", measure)
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    assert throughput.cpu_peak("fp32", other) == 1e11
    assert throughput.cpu_peak("fp32", other) == 1e11  # kept: measured once
    assert seen == [("cpu", "fp32", other)]
    assert torch.get_num_threads() == before


def test_adopted_peaks_are_this_processs_without_measuring(monkeypatch):
    monkeypatch.setattr(throughput, "_PEAKS", {})
    monkeypatch.setattr(throughput, "matmul_flops", pytest.fail)
    threads = torch.get_num_threads()
    throughput.adopt_peaks((("fp32", threads, 3e11), ("bf16-mixed", threads, 2e11)))
    assert peak_flops("cpu", "fp32") == 3e11
    # bf16 under 1.25x fp32's: "auto" keeps fp32, from the adopted figures alone.
    assert throughput.resolve_precision("cpu", "auto") == "fp32"


def test_cpu_name_is_the_model_name_else_what_platform_knows(monkeypatch):
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    if names:
        assert throughput.cpu_name() == names[0]

    def missing(*args, **kwargs):
        raise FileNotFoundError("/proc/cpuinfo")

    monkeypatch.setattr(throughput, "open", missing, raising=False)  # as on macOS or Windows
    monkeypatch.setattr(throughput.platform, "processor", lambda: "arm")
    assert throughput.cpu_name() == "arm"
    monkeypatch.setattr(throughput.platform, "processor", lambda: "")
    assert throughput.cpu_name() == throughput.platform.machine()


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    def machine(cuda: bool, mps: bool) -> str:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        return resolve_device("auto")

    assert machine(cuda=True, mps=True) == "cuda"
    assert machine(cuda=False, mps=True) == "mps"
    assert machine(cuda=False, mps=False) == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"  # a named device is taken as it is


def test_results_carry_flops_mfu_and_the_resolved_device(tmp_path, tiny_doc, plugins):
    tiny_doc["train"]["device"] = "auto"
    tiny_doc["train"]["peak_tflops"] = 0.1
    row = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False).iloc[0]
    assert row["flops_per_token"] > 0
    assert row["mfu"] == pytest.approx(row["flops_per_token"] * row["tokens_per_s"] / 1e11)
    import json

    summary = json.loads((tmp_path / "base/seed-0/summary.json").read_text())
    assert summary["device"] == resolve_device("auto") and summary["precision"] == "fp32"


@pytest.mark.slow
def test_bf16_mixed_trains_and_stays_close_to_fp32(tmp_path, tiny_doc, plugins):
    fp32 = run(parse_spec(tiny_doc), tmp_path / "a", plugins=plugins, progress=False)
    tiny_doc["train"]["precision"] = "bf16-mixed"
    bf16 = run(parse_spec(tiny_doc), tmp_path / "b", plugins=plugins, progress=False)
    assert bf16["status"].iloc[0] == "ok"
    assert bf16["val_loss"].iloc[0] == pytest.approx(fp32["val_loss"].iloc[0], abs=0.05)
    assert bf16["val_loss"].iloc[0] != fp32["val_loss"].iloc[0]  # autocast really ran


def test_compile_falls_back_to_eager_with_a_message(
    tmp_path, tiny_doc, plugins, monkeypatch, capsys
):
    class Uncompilable(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            raise RuntimeError("backend exploded")

    eager = run(parse_spec(tiny_doc), tmp_path / "eager", plugins=plugins, progress=False)
    monkeypatch.setattr(torch, "compile", lambda model: Uncompilable(model))
    tiny_doc["train"]["compile"] = True
    table = run(parse_spec(tiny_doc), tmp_path / "c", plugins=plugins, progress=False)
    assert (
        "torch.compile failed (RuntimeError: backend exploded); training eagerly"
        in capsys.readouterr().err
    )
    assert table["val_loss"].tolist() == eager["val_loss"].tolist()  # the same run, eagerly


@pytest.mark.parametrize(
    "bf16_over_fp32, expected",
    [(2.7, "bf16-mixed"), (1.25, "bf16-mixed"), (1.2, "fp32"), (0.5, "fp32")],
)
def test_auto_precision_takes_bf16_on_a_cpu_only_where_it_is_clearly_faster(
    monkeypatch, bf16_over_fp32, expected
):
    peaks = {"fp32": 100e9, "bf16-mixed": bf16_over_fp32 * 100e9}
    monkeypatch.setattr(throughput, "peak_flops", lambda device, precision: peaks[precision])
    assert resolve_precision("cpu", "auto") == expected
    assert resolve_precision("cpu", "fp32") == "fp32"  # a named precision is taken as it is
    assert resolve_precision("cpu", "bf16-mixed") == "bf16-mixed"


def test_auto_precision_on_gpus_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("cuda:0", "auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("cuda", "auto") == "fp32"
    assert resolve_precision("mps", "auto") == "fp32"


def test_a_run_records_the_precision_auto_chose(tmp_path, tiny_doc, plugins, monkeypatch):
    import json

    monkeypatch.setattr(
        throughput, "peak_flops", lambda device, precision: 1e11 if precision == "fp32" else 3e11
    )
    tiny_doc["train"]["precision"] = "auto"
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert table["precision"].tolist() == ["bf16-mixed"]
    summary = json.loads((tmp_path / "base/seed-0/summary.json").read_text())
    config = json.loads((tmp_path / "base/seed-0/config.json").read_text())
    assert summary["precision"] == "bf16-mixed" and config["train"]["precision"] == "auto"


def test_a_bad_precision_is_one_line_naming_the_choices(tiny_doc):
    from toolkit.errors import SpecError

    tiny_doc["train"]["precision"] = "fp16"
    with pytest.raises(SpecError, match=r"train\.precision must be one of fp32, bf16-mixed, auto"):
        parse_spec(tiny_doc)


@pytest.mark.slow
@pytest.mark.parametrize("bf16_gflops", [1.0, 300.0])
def test_bf16_where_it_is_the_slower_is_warned_before_training_and_by_validate(
    bf16_gflops, tmp_path, tiny_doc, plugins, monkeypatch, capsys
):
    from tests.conftest import small_toml, write_spec
    from toolkit.cli import main

    monkeypatch.setattr(throughput, "_PEAKS", {})
    threads = torch.get_num_threads()
    throughput.adopt_peaks((("fp32", threads, 1e11), ("bf16-mixed", threads, bf16_gflops * 1e9)))
    warning = (
        "warning: train.precision = 'bf16-mixed' on this CPU, whose bfloat16 matrix products "
        "run at 1.0 GFLOP/s against float32's 100 (no native bfloat16)"
    )
    tiny_doc["train"].update(precision="bf16-mixed", max_steps=1, eval_interval=1)
    tiny_doc["sampling"]["max_new_tokens"] = 0
    run(parse_spec(tiny_doc), tmp_path / "run", plugins=plugins, progress=False)
    assert capsys.readouterr().err.count(warning) == (1 if bf16_gflops < 50 else 0)
    run(parse_spec(tiny_doc), tmp_path / "run", plugins=plugins, progress=False)
    assert warning not in capsys.readouterr().err  # nothing left to train: nothing to say
    # A tuned sweep trains in two phases, and says it once.
    tiny_doc["tune"] = {"train.lr": [1e-3, 3e-3]}
    tiny_doc["data"]["test_fraction"] = 0.05
    run(parse_spec(tiny_doc), tmp_path / "tuned", plugins=plugins, progress=False)
    assert capsys.readouterr().err.count(warning) == (1 if bf16_gflops < 50 else 0)

    spec = write_spec(tmp_path / "s.toml", small_toml("s", train='precision = "bf16-mixed"'))
    assert main(["validate", str(spec)]) == 0
    assert capsys.readouterr().err.count(warning) == (1 if bf16_gflops < 50 else 0)
    fp32 = write_spec(tmp_path / "f.toml", small_toml("f"))
    assert main(["validate", str(fp32)]) == 0
    assert "warning" not in capsys.readouterr().err
