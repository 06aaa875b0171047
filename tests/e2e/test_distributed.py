"""One run across two processes (torchrun, gloo on the CPU) trains like one process does, with
rank 0 alone writing files and calling observers, and resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.errors import SpecError, ToolkitError
from toolkit.spec.parse import parse_spec
from toolkit.training import distributed
from toolkit.training.distributed import World, check_world

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]

# Two runs: without dropout a two-process run must match a single process (up to the order of
# float sums); with dropout each process draws its own masks, so only resuming is compared.
SPEC = """
name = "ddp"
seeds = [0]

[data]
tokenizer = "bytes"

[model]
context_length = 32
emb_dim = 32
n_heads = 2
n_layers = 1
drop_rate = 0.0

[train]
batch_size = 4
max_steps = 6
eval_interval = 3
eval_batches = 3
lr = 3e-3
peak_tflops = 1.0  # not measured: saves a second per process

[sampling]
sampler = "greedy"
max_new_tokens = 8

[[variants]]
name = "base"

[[variants]]
name = "dropout"
"model.drop_rate" = 0.2
"""

# An observer that notes every hook call with the rank that made it, and copies the dropout
# run's folder as an interruption right after its first evaluation would leave it.
OBSERVER = """
import os
import shutil

from toolkit import hookimpl


def _note(event):
    with open(os.environ["DDP_TEST_CALLS"], "a", encoding="utf-8") as f:
        f.write(f"{event} rank={os.environ.get('RANK', '0')}\\n")


@hookimpl
def on_run_start(run):
    _note(f"start {run.variant}")


@hookimpl
def on_eval(run, step, metrics):
    _note(f"eval {run.variant} {step}")
    snapshot = os.environ.get("DDP_TEST_SNAPSHOT")
    if snapshot and run.variant == "dropout" and step == 3:
        shutil.copytree(run.folder, snapshot)


@hookimpl
def on_run_end(run, summary):
    _note(f"end {run.variant}")
"""


def start(base: Path, out: Path, *args: str, processes: int = 1, **env: str) -> subprocess.Popen:
    """`ablate run` of the spec in `base` through the real entry point, under torchrun when
    `processes` > 1; observer calls land in out.calls."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_")}
    environ.update(
        ABLATE_CACHE_DIR=str(base / "cache"),  # shared by the module's runs: tokenized once
        ABLATE_DISABLE_PLUGIN_AUTOLOAD="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(base), os.environ.get("PYTHONPATH", "")]),
        DDP_TEST_CALLS=str(out.with_suffix(".calls")),
        **env,
    )
    launcher = [*TORCHRUN, str(processes)] if processes > 1 else [sys.executable]
    command = [*launcher, "-m", "toolkit", "run", str(base / "spec.toml"), "--out", str(out)]
    command += ["--quiet", "--plugin", "ddp_observer", *args]
    return subprocess.Popen(
        command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "train_s")} for r in records]


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The spec trained in one process (single/) and across two (ddp/, with a snapshot of the
    dropout run after its first evaluation), and a launch with a batch two processes cannot
    share: all at once, as most of their time is starting Python and torch."""
    base = tmp_path_factory.mktemp("ddp")
    (base / "spec.toml").write_text(SPEC, encoding="utf-8")
    (base / "ddp_observer.py").write_text(OBSERVER, encoding="utf-8")
    launches = {
        "single": start(base, base / "single"),
        "ddp": start(base, base / "ddp", processes=2, DDP_TEST_SNAPSHOT=str(base / "snapshot")),
        "uneven": start(base, base / "uneven", "--set", "train.batch_size=3", processes=2),
    }
    results = {name: finish(process) for name, process in launches.items()}
    for name in ("single", "ddp"):
        assert results[name].returncode == 0, results[name].stderr
    return {"base": base, **results}


def test_a_single_process_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.setup()
    assert world == distributed.current() == World(rank=0, size=1, local_rank=0)
    assert world.main and not world.active
    assert distributed.setup() == world  # idempotent
    distributed.barrier()
    marker = object()
    assert distributed.broadcast_object(marker) is marker
    assert distributed.all_gather_object(marker) == [marker]
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2]
    distributed.shutdown()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup() == World()
    assert World(rank=1, size=2).active and not World(rank=1, size=2).main


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2, WORLD_SIZE=2"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ],
)
def test_a_bad_torchrun_environment_is_a_one_line_error(monkeypatch, env, message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ToolkitError, match=message) as caught:
        distributed.setup()
    assert "\n" not in str(caught.value)
    assert not torch.distributed.is_initialized()


def test_the_global_batch_must_split_evenly(tiny_doc):
    run = parse_spec(tiny_doc).runs[0]  # batch_size 4
    check_world(run, World(), "cpu")
    check_world(run, World(rank=1, size=4), "cpu")
    with pytest.raises(SpecError, match=r"train.batch_size \(4\) .* among the 3 processes"):
        check_world(run, World(rank=0, size=3), "cpu")
    with pytest.raises(SpecError, match="mps cannot be shared"):
        check_world(run, World(rank=0, size=2), "mps")


def test_two_processes_train_like_one(sweeps):
    base = sweeps["base"]
    single, ddp = base / "single/base/seed-0", base / "ddp/base/seed-0"
    one, two = metrics(single), metrics(ddp)
    assert [m["step"] for m in two] == [m["step"] for m in one] == [3, 6]
    for a, b in zip(one, two, strict=True):
        assert (b["tokens"], b["lr"]) == (a["tokens"], a["lr"])  # the same global batches
        for key in ("train_loss", "val_loss", "val_bpb"):
            # Observed: differences of about 1e-7 relative (float sums in another order).
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=0), key
    assert summary(ddp)["world_size"] == 2 and summary(single)["world_size"] == 1
    assert summary(ddp)["val_loss"] == two[-1]["val_loss"]
    assert json.loads((ddp / "env.json").read_text())["world_size"] == 2
    assert (base / "ddp/results.csv").is_file()
    assert (base / "ddp/experiment.json").is_file()


def test_rank_0_alone_writes_files_and_calls_observers(sweeps):
    base = sweeps["base"]
    calls = (base / "ddp.calls").read_text().splitlines()
    assert calls == [
        f"{event} rank=0"
        for variant in ("base", "dropout")
        for event in (
            f"start {variant}",
            f"eval {variant} 3",
            f"eval {variant} 6",
            f"end {variant}",
        )
    ]
    for variant in ("base", "dropout"):
        folder = base / "ddp" / variant / "seed-0"
        names = sorted(p.name for p in folder.iterdir())
        assert names == [
            "checkpoint.pt",
            "config.json",
            "env.json",
            "metrics.jsonl",
            "sample.txt",
            "summary.json",
        ]
        assert [m["step"] for m in metrics(folder)] == [3, 6]  # one line per evaluation
    assert not [p for p in (base / "ddp").rglob("*.tmp")]  # no half-written files


def test_a_two_process_run_resumes_exactly(sweeps):
    # The snapshot holds the dropout run's folder as it was right after its step-3 evaluation:
    # what an interruption there leaves.
    base = sweeps["base"]
    snapshot = base / "snapshot"
    state = torch.load(snapshot / "resume.pt", weights_only=True)
    assert state["step"] == 3 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0], state["rng_ranks"][1])  # own dropout masks
    out = base / "resumed"
    shutil.copytree(base / "ddp/base", out / "base")  # finished: skipped
    shutil.copytree(snapshot, out / "dropout/seed-0")
    resumed = finish(start(base, out, processes=2))
    assert resumed.returncode == 0, resumed.stderr
    folder, whole = out / "dropout/seed-0", base / "ddp/dropout/seed-0"
    assert without_time(metrics(folder)) == without_time(metrics(whole))
    assert summary(folder)["resumed_at_step"] == 3
    assert summary(folder)["val_loss"] == summary(whole)["val_loss"]
    assert not (folder / "resume.pt").exists()
    assert out.with_suffix(".calls").read_text().splitlines() == [
        "start dropout rank=0",
        "eval dropout 6 rank=0",
        "end dropout rank=0",
    ]


def test_a_batch_that_does_not_split_is_a_one_line_error(sweeps):
    out, result = sweeps["base"] / "uneven", sweeps["uneven"]
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ablate: error:")]
    assert errors and all("train.batch_size (3)" in line for line in errors), result.stderr
    # torchrun reports the failed processes with a traceback of its own; none is ours.
    assert f'File "{ROOT / "toolkit"}' not in result.stderr
    assert not list(out.glob("*/seed-*"))


# Rank 0 stops after joining; rank 1 then waits on it in a collective.
LOST_PEER = """
import os, sys
from toolkit.training import distributed
distributed.setup()
if distributed.current().main:
    sys.exit(3)
try:
    with distributed.peers_watched():
        distributed.barrier()
except Exception as exc:
    print(type(exc).__name__, exc, sep=": ")
"""


def test_a_peer_that_stops_leaves_one_line_not_a_gloo_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", LOST_PEER],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    done = [p.communicate(timeout=120) for p in ranks]
    assert ranks[0].returncode == 3
    stdout, stderr = done[1]
    assert stdout.startswith("ToolkitError: process 1 of 2: another process of this torchrun"), (
        stdout + stderr
    )
    assert "its own error, above, says why" in stdout and stdout.count("\n") == 1
