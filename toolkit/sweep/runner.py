"""The sweep: every variant x seed of a spec, trained by an executor, with a progress display.

`run(spec, out_dir)` prepares everything first (preflight.py: plugins, corpora tokenized once
per distinct data config, every run's context checked against the data, the executor's own
checks) so a mistake fails before any training; then the executor trains each run into its own
folder (in this process, in worker processes or on Ray: toolkit/sweep/jobs.py) and `results.csv`
is rebuilt after each, so results land as they are produced. A run already finished with the
same config (same config hash) is skipped, so re-running a sweep continues it. A run that raises
is recorded as `failed` (error.txt holds the traceback) and the sweep goes on. Under torchrun
every rank runs the sweep and rank 0 alone writes the experiment's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import split_choice
from toolkit.data.resolve import data_key
from toolkit.data.tokens import TokenData
from toolkit.errors import (
    SpecError,
    StorageError,
    ToolkitError,
    one_line,
)
from toolkit.files import read_json, remove_temps, storage_problem, write_json
from toolkit.inference import sampling_ablation
from toolkit.names import label
from toolkit.spec.parse import load_spec
from toolkit.spec.schema import RunSpec, Spec
from toolkit.spec.tune import point_label, tuned_spec, tuning_spec
from toolkit.sweep.display import SweepDisplay
from toolkit.sweep.jobs import RunJob, Sweep
from toolkit.sweep.preflight import (
    check_distributed,
    check_output_dir,
    precision_warnings,
    prepare_data,
)
from toolkit.sweep.reruns import (
    check_same_experiment,
    check_tunable_folder,
    check_unchanged,
    finished,
    rerun_indices,
    run_names,
)
from toolkit.sweep.results import collect, write_table
from toolkit.sweep.tuning import TUNE_DIR, changed_choices, choose, write_choice
from toolkit.training import distributed


def run(
    spec: Spec | str | Path,
    out_dir: str | Path | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    progress: bool = True,
    restart: bool = False,
    executor: str | dict[str, Any] | Any = "local",
    rerun: list[str] | tuple[str, ...] = (),
) -> pd.DataFrame:
    """Train every run of a spec; return the results table (also in <out_dir>/results.csv).
    out_dir defaults to runs/<spec name>. Runs already finished with the same config are
    skipped and interrupted ones resume from their last evaluation, unless `restart`.
    `executor` names a registered executor ("local", "processes", "ray"), gives one with its
    options ({"name": "processes", "jobs": 4}), or is an executor object (toolkit/sweep/jobs.py).
    `rerun` names runs ("VARIANT/seed-N", or their folder) to train again even if finished.
    Under torchrun every rank calls this and each run is trained across all of them (DDP).
    A spec whose [sampling_ablation] names runs trained elsewhere trains nothing: it samples
    from those into <out_dir>/sampling and returns the sampling table (one row per model run
    x sampler x seed)."""
    # Under torchrun, what every process can check alone is checked before any joins the
    # others: a process that fails while another still connects would leave that one a gloo
    # error instead of the reason.
    world = distributed.planned()
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides, plugins=plugins)
        said = progress and world.main  # as `ablate run` says them
        for line in [f"note: {n}" for n in spec.notes] + [f"warning: {w}" for w in spec.warnings]:
            if said:
                print(line, file=sys.stderr)
    elif overrides:
        raise SpecError("pass overrides to load_spec() when giving run() a loaded Spec")
    plugins = plugins or load_plugins()
    for module in spec.plugins:
        plugins.load_module(module, source=f"spec {spec.path}")
    name, runner = resolve_executor(executor, plugins)
    out = Path(out_dir) if out_dir is not None else Path("runs") / spec.name
    if out.exists() and not out.is_dir():
        raise SpecError(f"output path {out} is a file; give a folder with --out")
    if spec.samples_only:
        if world.active:
            raise SpecError(
                f"{spec.path}: [sampling_ablation] runs names trained models, so nothing "
                f"trains; run it without torchrun"
            )
        return _sample_only(spec, out, plugins, progress)
    if world.active:
        check_distributed(spec, world.size, name)
    world = distributed.setup()
    phase = Phase(plugins, name, runner, progress and world.main, restart)
    with distributed.peers_watched():
        if spec.tune is None:
            return _run_phase(spec, out, phase, rerun)
        return _run_tuned(spec, out, phase, rerun)


@dataclass
class Phase:
    """What every phase of a sweep shares: the plugins, the executor and the switches."""

    plugins: Plugins
    executor_name: str
    executor: Any
    progress: bool
    restart: bool
    # Warnings already said: the phases of a tuned sweep say each once.
    warned: set[str] = field(default_factory=set)


def _run_tuned(
    spec: Spec, out: Path, phase: Phase, rerun: list[str] | tuple[str, ...]
) -> pd.DataFrame:
    """A spec with [tune]: every variant at every point on the tuning seeds (in out/tune), then
    each at its best point on all seeds (in out), reported like any sweep. out stays locked
    from the first tuning run to the last final one, and tuning.csv is written with the final
    phase's experiment.json: a sweep stopped between the phases leaves both as they were, so
    the report never names a choice the final runs did not train with."""
    assert spec.tune is not None
    world = distributed.current()
    tuning = tuning_spec(spec, phase.plugins)
    in_tuning = {n for n in rerun if n.rstrip("/") in run_names(tuning)}
    final_rerun = [n for n in rerun if n not in in_tuning]
    if world.main:
        # What can be checked of the final phase is checked before tuning trains anything.
        check_output_dir(out)
        check_same_experiment(spec, out)
        rerun_indices(spec, final_rerun)  # the final runs have the spec's names
        if not phase.restart:
            check_tunable_folder(spec, out)
        held = read_json(out / "experiment.json")
        before = held.get("tune") if isinstance(held, dict) else None
        before = before if isinstance(before, dict) else {}
    with OutputLock(out) if world.main else contextlib.nullcontext():
        if phase.progress:
            t = spec.tune
            print(
                f"tuning {', '.join(t.keys())}: {len(spec.variants)} variant(s), "
                f"{t.n_runs([v.name for v in spec.variants])} run(s) in all, in "
                f"{out / TUNE_DIR}",
                file=sys.stderr,
            )
        _run_phase(tuning, out / TUNE_DIR, phase, sorted(in_tuning))
        choice = choose(spec, collect(out / TUNE_DIR))
        if world.main:
            if phase.progress:
                for variant, point in choice.chosen.items():
                    print(f"tuned {variant}: {point_label(point)}", file=sys.stderr)
            for warning in choice.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        final = tuned_spec(spec, choice.chosen, phase.plugins)
        # A changed choice (another grid, or tuning runs retrained) trains the final runs again.
        if world.main and not phase.restart:
            for line in changed_choices(before.get("chosen") or {}, choice.chosen):
                print(f"note: {line}", file=sys.stderr)
        free = tuple(spec.tune.keys())
        return _run_phase(
            final,
            out,
            phase,
            final_rerun,
            free,
            locked=True,
            with_experiment=lambda: write_choice(out, choice),
        )


def _run_phase(
    spec: Spec,
    out: Path,
    phase: Phase,
    rerun: list[str] | tuple[str, ...],
    free: tuple[str, ...] = (),
    *,
    locked: bool = False,
    with_experiment: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Train every run of a spec into out (one sweep, or one phase of a tuned one). Runs in
    out of settings that differ only in the keys `free` are trained again, not refused.
    locked: the caller holds out's lock already; with_experiment: written right after
    experiment.json (a tuned sweep's tuning.csv)."""
    world = distributed.current()
    plugins, runner, restart = phase.plugins, phase.executor, phase.restart
    if world.active:
        check_distributed(spec, world.size, phase.executor_name)
    # Every check passes before anything is written. Under torchrun, rank 0 tokenizes into the
    # cache first and the other ranks then read it.
    if world.main:
        datasets = prepare_data(spec, plugins)
        again = rerun_indices(spec, rerun)
        check_same_experiment(spec, out)
        if not restart:
            keys = {i: datasets[data_key(r.data)][0].key for i, r in enumerate(spec.runs)}
            check_unchanged(spec, out, skip=again, free=free, data_keys=keys)
        # The executor's checks (a package, a cluster, its resources) cover every run; last,
        # since a Ray executor starts its cluster here.
        runner.prepare(make_jobs(spec, out, range(len(spec.runs))), plugins)
        check_output_dir(out)
    distributed.barrier()
    if not world.main:
        datasets = prepare_data(spec, plugins)
        again = set()
    with OutputLock(out) if world.main and not locked else contextlib.nullcontext():
        if world.main:  # the folder is ours now: what interrupted writes left can go
            remove_temps(out, recursive=True)
        table = _sweep(spec, out, plugins, datasets, phase, again, with_experiment)
    distributed.barrier()  # every rank returns the finished table
    return table if world.main else collect(out)


def _sample_only(spec: Spec, out: Path, plugins: Plugins, progress: bool) -> pd.DataFrame:
    """The sampling ablation alone, of the runs [sampling_ablation] names, into out/sampling;
    every named run is checked before any is sampled."""
    ablation = spec.sampling_ablation
    runs = sampling_ablation.model_runs(ablation, [])
    sampling_ablation.check_runs(ablation, runs)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out):
        return sampling_ablation.run_ablation(ablation, runs, out, plugins, progress)


def resolve_executor(executor: str | dict[str, Any] | Any, plugins: Plugins) -> tuple[str, Any]:
    """(name, executor object) from a name, a {"name": ..., option: ...} choice, or an object
    that already has prepare() and execute()."""
    if hasattr(executor, "execute") and hasattr(executor, "prepare"):
        return type(executor).__name__, executor
    if not isinstance(executor, str | dict):
        raise SpecError(
            f"executor must be a name such as 'processes', a {{name=..., option=...}} choice "
            f"or an executor object, got {type(executor).__name__}"
        )
    name, options = split_choice(executor)
    return name, plugins.registry.get("executor", name).build(**options)


def _sweep(
    spec: Spec,
    out: Path,
    plugins: Plugins,
    datasets: dict[str, tuple[TokenData, Any]],
    phase: Phase,
    again: set[int],
    with_experiment: Callable[[], None] | None = None,
) -> pd.DataFrame:
    world = distributed.current()
    progress, restart, executor = phase.progress, phase.restart, phase.executor
    todo = [
        i
        for i, r in enumerate(spec.runs)
        if restart or i in again or not finished(out / r.folder, r.config_hash())
    ]
    todo = distributed.broadcast_object(todo)  # rank 0 decides, so all ranks train the same
    jobs = make_jobs(spec, out, todo)
    if world.main:
        for i in sorted(again):  # asked for by name: from scratch, not from a resume state
            if (out / spec.runs[i].folder).exists():
                shutil.rmtree(out / spec.runs[i].folder)
    if restart and world.main:
        earlier = [out / r.folder for r in spec.runs if (out / r.folder).exists()]
        if progress or earlier:
            print(
                f"restart: discarding {len(earlier)} earlier run folder(s) in {out}",
                file=sys.stderr,
            )
        for folder in earlier:
            shutil.rmtree(folder)
    distributed.barrier()
    if world.main:
        write_experiment(spec, out)
        if with_experiment is not None:
            with_experiment()
        for warning in precision_warnings([j.run for j in jobs]):
            if warning not in phase.warned:
                phase.warned.add(warning)
                print(f"warning: {warning}", file=sys.stderr)

    display = SweepDisplay(len(spec.runs), enabled=progress)
    for i, r in enumerate(spec.runs):
        if i not in todo:
            display.skip(i, r.variant, r.seed)
    finished_runs: set[int] = set()
    try:
        for job, summary in executor.execute(jobs, Sweep(display, plugins, datasets)):
            if job.index in finished_runs or job.index not in todo:
                raise ToolkitError(f"the executor returned {job.label} twice or unasked")
            finished_runs.add(job.index)
            display.end(job, summary)
            if world.main:
                write_table(out)
    finally:
        display.close()
    missing = [spec.runs[i] for i in todo if i not in finished_runs]
    if missing:
        raise ToolkitError(
            f"the executor ended without {len(missing)} run(s) ({missing[0].variant} "
            f"seed={missing[0].seed} first); run the same command to train them"
        )
    if not world.main:
        return pd.DataFrame()
    table = write_table(out)
    if spec.sampling_ablation is not None:
        runs = sampling_ablation.model_runs(
            spec.sampling_ablation, [out / r.folder for r in spec.runs]
        )
        sampling_ablation.run_ablation(spec.sampling_ablation, runs, out, plugins, progress)
    return table


def make_jobs(spec: Spec, out: Path, indices: Any) -> list[RunJob]:
    """The runs at these positions of the sweep, as jobs for an executor."""
    return [
        RunJob(
            index=i,
            total=len(spec.runs),
            run=spec.runs[i],
            folder=str((out / spec.runs[i].folder).resolve()),
            columns=_columns(spec, spec.runs[i]),
        )
        for i in indices
    ]


def write_experiment(spec: Spec, out: Path) -> None:
    """experiment.json: what the folder's table gathers (runs by variant, seed and hash)."""
    write_json(
        out / "experiment.json",
        {
            "name": spec.name,
            "spec": spec.path,
            "description": spec.description,
            "baseline": spec.baseline,
            "seeds": spec.seeds,
            "axes": spec.axes(),
            "variants": [v.name for v in spec.variants],
            "runs": [
                {
                    "variant": r.variant,
                    "seed": r.seed,
                    "folder": r.folder,
                    "config_hash": r.config_hash(),
                }
                for r in spec.runs
            ],
            "base": spec.base,
            **({"tune": {**spec.tune.to_dict(), "chosen": spec.tuned}} if spec.tune else {}),
            **({"ladder": spec.ladder.to_dict()} if spec.ladder else {}),
        },
    )


def _columns(spec: Spec, r: RunSpec) -> dict[str, Any]:
    """The table cells a run's summary carries besides its own: baseline flag, grid axes."""
    return {
        "baseline": r.variant == spec.baseline,
        **{axis: _cell(r.get(axis)) for axis in spec.axes()},
    }


class OutputLock:
    """An exclusive lock on an output folder, so two sweeps never write one folder at once.
    The operating system drops it when the process ends, even when killed outright."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".ablate.lock"
        self.file: Any = None

    def __enter__(self) -> OutputLock:
        try:
            self.file = self.path.open("a+")
        except OSError as exc:
            raise StorageError(
                f"cannot lock output folder {self.path.parent}: "
                f"{storage_problem(exc) or one_line(exc)}; free space or choose another --out"
            ) from None
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "?"
            self.file.close()
            raise ToolkitError(
                f"output folder {self.path.parent} is in use by another ablate run (pid "
                f"{holder}); wait for it to finish or choose another --out"
            ) from None
        try:  # who holds it, for the message another sweep gets
            self.file.seek(0)
            self.file.truncate()
            self.file.write(str(os.getpid()))
            self.file.flush()
        except OSError:  # a full disk: the lock holds all the same
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # closing releases the lock


def _cell(value: Any) -> Any:
    """A config value as a table cell: scalars stay, choices and lists become short strings."""
    if isinstance(value, dict | list):
        return label(value)
    return value
