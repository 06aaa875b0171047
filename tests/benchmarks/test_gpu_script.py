"""benchmarks/gpu.py without a GPU: the published-peak table, the refusal without one, and the
smoke run (`--device cpu --smoke`) through the same functions as the real benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _load():
    # benchmarks/ is no installed package: load the script as a module by its path.
    spec = importlib.util.spec_from_file_location("benchmarks_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu = _load()


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5),  # the SXM part
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H200", 989.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100-PCIE-40GB", 312.0),
        ("NVIDIA A10G", 125.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.05),  # not L4's
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA GeForce RTX 3090", 71.0),
    ],
)
def test_published_peak_of_known_gpus(name: str, tflops: float) -> None:
    peak, source = gpu.published_peak(name)
    assert peak == tflops and source


def test_published_peak_unknown_v100_and_override() -> None:
    peak, source = gpu.published_peak("NVIDIA RTX A1000 6GB")  # "A100" is no whole word of it
    assert peak is None and "--peak-tflops" in source
    peak, source = gpu.published_peak("Tesla V100-SXM2-16GB")
    assert peak is None and "no bf16" in source
    assert gpu.published_peak("NVIDIA H100 80GB HBM3", 500.0) == (500.0, "--peak-tflops")
    assert gpu.published_peak("cpu (x86_64)", 1.5) == (1.5, "--peak-tflops")


@pytest.mark.parametrize("argv", [["--device", "cuda"], ["--device", "cpu"]])
def test_without_a_gpu_or_smoke_exits_2_with_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    assert gpu.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "--smoke" in err


@pytest.mark.slow
def test_smoke_run_writes_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--smoke", "--json", str(path)]) == 0
    r = json.loads(path.read_text())
    assert (r["mode"], r["device"], r["preset"], r["context_length"], r["steps"]) == (
        "smoke", "cpu", "micro", 64, 3
    )  # fmt: skip
    assert r["precision"] == "fp32" and r["status"] == "ok"
    assert r["compile"] is False and r["compiled"] is False
    assert r["tf32"] is False and r["fused_adamw"] is True  # TF32 is CUDA-only; fused is not
    assert r["tokens_per_s"] > 0 and r["flops_per_token"] > 0 and r["params"] > 0
    assert r["mfu_measured"] > 0 and r["peak_tflops_measured"] > 0
    # No published peak for a CPU and no --peak-tflops: MFU unknown, and how to give the peak.
    assert r["peak_tflops_published"] is None and r["mfu_published"] is None
    assert "--peak-tflops" in r["peak_source"]
    assert r["max_memory_allocated_bytes"] is None
    assert 0 < r["first_step_s"] < r["train_s"]
    assert math.isfinite(r["val_loss"]) and r["eval_s"] >= 0
    assert r["quickstart_runs"] == 4 and r["quickstart_seeds"] == 1
    assert len(r["quickstart_val_loss"]) == 4
    assert all(math.isfinite(v) for v in r["quickstart_val_loss"].values())
    assert r["total_wall_s"] >= r["quickstart_wall_s"] > 0
    table = capsys.readouterr().out
    assert "MFU, published bf16 peak" in table and "unknown" in table
    assert "norm=rmsnorm,activation=relu" in table


def test_table_gives_mfu_against_a_known_peak() -> None:
    figures = {
        "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.x", "cuda": "12.x",
        "preset": "gpt2-small", "params": 124_439_808, "context_length": 1024,
        "batch_size": 16, "steps": 300, "precision": "bf16-mixed", "compile": True,
        "compiled": False, "tf32": True, "fused_adamw": True, "tokens_per_s": 1000.0,
        "peak_tflops_published": 989.5, "peak_source": "H100 SXM datasheet",
        "mfu_published": 0.4, "mfu_measured": 0.5, "peak_tflops_measured": 800.0,
        "max_memory_allocated_bytes": 3 * 2**30, "first_step_s": 40.0, "train_s": 50.0,
        "eval_s": 5.0, "quickstart_wall_s": 30.0, "quickstart_runs": 8,
        "quickstart_train_s": 20.0, "quickstart_seeds": 2,
        "quickstart_val_loss": {"norm=layernorm,activation=gelu": 2.5}, "total_wall_s": 120.0,
    }  # fmt: skip
    table = gpu.format_table(figures)
    assert "40.0%" in table and "989.5 TFLOPS: H100 SXM datasheet" in table
    assert "3.00 GiB" in table and "on / on" in table
    assert "torch.compile failed" in table  # compile asked for, eager ran: said
