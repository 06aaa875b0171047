"""Executors: where a sweep's runs are trained. The contract of the `executor` kind.

The runner turns every run still to do into a `RunJob` (plain, picklable data: the resolved
run, its folder, the plugin modules to load) and hands the list to an executor, which yields
`(job, summary)` pairs as runs finish, in any order. The runner does the rest: the results
table after each run, the display, the sampling ablation. Built in (`plugins/executors.py`):

- `local`: one run after another in this process (the default);
- `processes`: each run in a fresh process, `jobs` at a time, each with its share of the cores;
- `ray`: each run a Ray task with the CPUs (train.threads) and GPU (train.device) it asks for.

A worker trains a job with `run_job(job)`. It loads the plugins by module name and the tokens
from the content-keyed cache the runner filled, so every executor trains exactly what the local
one would: same seeds, same data order, same losses (bit for bit when train.threads is the
same; a different thread count only changes float summation order), and in the same precision:
workers on this machine take the CPU peaks this process measured before they started
(`with_peaks`), so train.precision = "auto" resolves one way for the whole sweep and MFU has
one reference. A run that raises becomes a `failed` summary with error.txt, wherever it ran; a
worker that dies is recorded the same way by the runner's side (`record_worker_death`).

An executor is any object with two methods:

- ``prepare(jobs, plugins) -> None``: checks before anything is written or trained (a missing
  package, plugins a worker cannot load, resources a cluster lacks); raise ToolkitError.
- ``execute(jobs, sweep) -> Iterator[(job, summary)]``: train every job, yielding each once.
  ``sweep`` (a `Sweep`) gives the display (call ``sweep.display.concurrent()`` first when runs
  train several at a time, ``start(job)`` when a run starts or ``queue(job)`` when it is only
  submitted, and ``poll()`` about once a second while waiting) and, to in-process executors, the loaded plugins and data. On interruption
  (the generator is closed or raises), stop the workers: resume.pt lets the next sweep go on.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from toolkit.api.manager import Plugins
from toolkit.data.resolve import data_key, load_data
from toolkit.errors import StorageError, ToolkitError, one_line
from toolkit.files import storage_problem, storage_remedy, write_atomic, write_json
from toolkit.training.distributed import current
from toolkit.training.loop import train_run
from toolkit.training.throughput import adopt_peaks, cpu_peak, resolve_device

if TYPE_CHECKING:
    from toolkit.api.contracts import Display
    from toolkit.spec.schema import RunSpec

# Environment a worker needs to see what this process sees (its cache, its plugin settings,
# live trackers); executors that start workers elsewhere pass these on explicitly.
FORWARDED_ENV = (
    "ABLATE_CACHE_DIR",
    "ABLATE_DISABLE_PLUGIN_AUTOLOAD",
    "ABLATE_TENSORBOARD",
    "ABLATE_MLFLOW",
    "ABLATE_WANDB",
    "WANDB_MODE",  # W&B's own settings, so a Ray worker logs where the driver would
    "WANDB_DIR",
    "WANDB_ENTITY",
    "WANDB_BASE_URL",
    "XDG_CACHE_HOME",
)


@dataclass(frozen=True)
class RunJob:
    """One run to train, as plain data a worker process or a Ray task can receive."""

    index: int  # position in the sweep, for the display ("[index+1/total]")
    total: int
    run: RunSpec
    folder: str  # absolute path of the run folder
    columns: dict[str, Any]  # table cells the summary carries (baseline flag, grid axes)
    plugin_modules: tuple[str, ...] = ()  # plugins beyond the built-ins, loaded by name
    autoload: bool = False  # load installed (entry-point) plugins too
    threads: int | None = None  # torch CPU threads, set by the executor (train.threads wins)
    # CPU matrix-product peaks measured by the sweep's process, (precision, threads, FLOP/s)
    # each (`with_peaks`); empty: the worker measures its own.
    peaks: tuple[tuple[str, int, float], ...] = ()

    @property
    def label(self) -> str:
        return f"[{self.index + 1}/{self.total}] {self.run.variant} seed={self.run.seed}"

    @property
    def cpus(self) -> int | None:
        """The CPU threads the spec asks for (train.threads), if it says."""
        return self.run.train.threads

    @property
    def device(self) -> str:
        return self.run.train.device


def check_devices_here(jobs: Sequence[RunJob], executor: str) -> None:
    """Every run's train.device is on this machine, for the executors that train here: a
    one-line error before anything trains (else each run would fail alone). Asked of torch
    without starting the device, so a GPU holds no context in the sweep's own process."""
    for device in sorted({j.device for j in jobs} - {"auto", "cpu"}):
        kind, _, index = device.partition(":")
        if kind == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            missing = count <= (int(index) if index else 0)
            here = f"{count} CUDA GPU(s)"
        else:  # mps: validation allows no other
            mps = getattr(torch.backends, "mps", None)
            missing = not (mps is not None and mps.is_available())
            here = "no MPS device"
        if missing:
            raise ToolkitError(
                f"train.device {device!r}: this machine has {here}, and the {executor} "
                f"executor trains here; use 'cpu' or 'auto', or --executor ray for a cluster "
                f"that has the device"
            )


@dataclass
class Sweep:
    """What an executor gets besides the jobs."""

    display: Display
    plugins: Plugins | None = None  # loaded in this process (in-process executors use them)
    datasets: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # data key -> tokens


class WorkerDied(ToolkitError):
    """A worker ended without returning its run's summary (killed, out of memory, crashed)."""


def plugin_modules(plugins: Plugins, executor: str) -> tuple[tuple[str, ...], bool]:
    """The plugin modules a worker must load, and whether to autoload installed ones. Plugins
    added as Python objects cannot travel to another process: that is an error here."""
    objects = [name for name, info in plugins.info.items() if info.source == "object"]
    if objects:
        raise ToolkitError(
            f"plugin {objects[0]!r} was added as a Python object, but the {executor} executor "
            f"trains in other processes, which load plugins by module name: put it in a module "
            f"and name it in the spec's plugins or with --plugin, or use the local executor"
        )
    # Modules loaded by name (--plugin, a spec, Plugins(modules), extra_plugins): the worker
    # loads them the same way. Built-ins and entry points load there by themselves, and a
    # module reached through a second door ("; same as ...") was loaded once, by the first.
    modules = tuple(
        name
        for name, info in plugins.info.items()
        if info.source != "builtin"
        and not info.source.startswith("entry point")
        and "; same as " not in info.source
    )
    autoload = any(info.source.startswith("entry point") for info in plugins.info.values())
    return modules, autoload


def with_peaks(jobs: Sequence[RunJob]) -> list[RunJob]:
    """The jobs, each with the CPU peaks its run needs (its precision's; fp32's and bf16's for
    train.precision = "auto"), measured in this process at the job's thread count, once per
    count, before any worker starts. Workers measuring their own, each while others train,
    would get different figures: "auto" could resolve to bf16 in one run and fp32 in the next
    of the same sweep, and MFU would carry each measurement's noise. For executors whose
    workers run on this machine, with each job's threads set; runs on a GPU, and runs that
    give train.peak_tflops for a fixed precision, measure nothing."""
    out = []
    for job in jobs:
        t = job.run.train
        wanted = ("fp32", "bf16-mixed") if t.precision == "auto" else (t.precision,)
        if (
            resolve_device(t.device) != "cpu"
            or not job.threads
            or (t.peak_tflops and len(wanted) == 1)
        ):
            out.append(job)
            continue
        peaks = tuple((p, job.threads, cpu_peak(p, job.threads)) for p in wanted)
        out.append(replace(job, peaks=peaks))
    return out


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def record_failure(
    r: RunSpec, folder: Path, exc: BaseException, columns: dict[str, Any]
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "error.txt", "".join(traceback.format_exception(exc)))
    summary = {
        "experiment": r.experiment,
        "variant": r.variant,
        "seed": r.seed,
        "status": "failed",
        **r.choices(),
        "error": one_line(exc),
        "config_hash": r.config_hash(),
        **columns,
    }
    write_json(folder / "summary.json", summary)
    return summary


# -- the worker side -------------------------------------------------------------------------
_WORKER_PLUGINS: dict[tuple[tuple[str, ...], bool], Plugins] = {}


def run_job(
    job: RunJob, sweep: Sweep | None = None, progress: Callable[..., None] | None = None
) -> dict[str, Any]:
    """Train one job and return its summary; a run that raises becomes a `failed` summary
    (error.txt holds the traceback), as in a local sweep. With `sweep` (in-process), its
    plugins and loaded data are used; otherwise (a worker) they are loaded here, the tokens
    from the cache the runner filled."""
    if job.threads:
        torch.set_num_threads(job.threads)  # train.threads, if set, wins inside train_run
    adopt_peaks(job.peaks)
    folder = Path(job.folder)
    try:
        if sweep is not None and sweep.plugins is not None:
            plugins = sweep.plugins
            data, tokenizer = sweep.datasets[data_key(job.run.data)]
        else:
            plugins = worker_plugins(job.plugin_modules, job.autoload)
            data, tokenizer = load_data(job.run.data, plugins)
        return train_run(job.run, data, tokenizer, folder, plugins, progress, job.columns)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        world = current()
        try:
            summary = record_failure(job.run, folder, exc, job.columns) if world.main else {}
        except OSError as unwritten:
            # Nothing can be written there (a full disk, say): stop the sweep in one line;
            # the same command goes on once there is room.
            raise StorageError(
                f"{job.label} failed ({one_line(exc, 160)}) and its failure cannot be recorded "
                f"({storage_problem(unwritten) or one_line(unwritten, 160)}); "
                f"{storage_remedy(unwritten)}, then run the same command to go on"
            ) from None
        if world.active:
            # One rank cannot go on alone to the next run: every rank stops here.
            raise ToolkitError(
                f"{job.run.variant} seed={job.run.seed} failed under torchrun "
                f"({one_line(exc)}); every rank stops, run the same command to go on"
            ) from exc
        return summary


def worker_plugins(modules: tuple[str, ...], autoload: bool) -> Plugins:
    """The plugins of a worker process, loaded once per process (Ray reuses workers)."""
    key = (modules, autoload)
    if key not in _WORKER_PLUGINS:
        _WORKER_PLUGINS[key] = Plugins(modules, autoload=autoload)
    return _WORKER_PLUGINS[key]


def record_worker_death(job: RunJob, how: str) -> dict[str, Any]:
    """Record a run whose worker died without a summary, as a failed run (error.txt says how)."""
    return record_failure(
        job.run,
        Path(job.folder),
        WorkerDied(f"the worker training this run {how}; run the same command to retry it"),
        job.columns,
    )


def describe_exit(code: int | None) -> str:
    """A worker process's exit code in words: 'was killed by SIGKILL (out of memory?)'."""
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code} without a result"
