"""The sweep: every variant x seed of a spec, one after another, with a progress display.

`run(spec, out_dir)` prepares everything first (plugins, corpora tokenized once per distinct
data config, every run's context checked against the data) so a mistake fails before any
training; then trains each run into its own folder and rebuilds `results.csv` after each, so
results land as they are produced. A run already finished with the same config (same config
hash) is skipped, so re-running a sweep continues it. A run that raises is recorded as
`failed` (error.txt holds the traceback) and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.data import TokenData, count_windows, load_tokens
from toolkit.errors import DataError, SpecError, ToolkitError
from toolkit.model import split_choice
from toolkit.plugins import Plugins, load_plugins
from toolkit.results import read_json, write_atomic, write_json, write_table
from toolkit.spec import RunSpec, Spec, load_spec


def run(
    spec: Spec | str | Path,
    out_dir: str | Path | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    progress: bool = True,
    restart: bool = False,
) -> pd.DataFrame:
    """Train every run of a spec; return the results table (also in <out_dir>/results.csv).
    out_dir defaults to runs/<spec name>. Runs already finished with the same config are
    skipped and interrupted ones resume from their last evaluation, unless `restart`."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides, plugins=plugins)
    elif overrides:
        raise SpecError("pass overrides to load_spec() when giving run() a loaded Spec")
    plugins = plugins or load_plugins()
    for module in spec.plugins:
        plugins.load_module(module, source=f"spec {spec.path}")
    out = Path(out_dir) if out_dir is not None else Path("runs") / spec.name
    if out.exists() and not out.is_dir():
        raise SpecError(f"output path {out} is a file; give a folder with --out")
    datasets = prepare_data(spec, plugins)  # every check passes before anything is written
    check_output_dir(out)
    with OutputLock(out):
        return _sweep(spec, out, plugins, datasets, progress, restart)


def _sweep(
    spec: Spec,
    out: Path,
    plugins: Plugins,
    datasets: dict[str, tuple[TokenData, Any]],
    progress: bool,
    restart: bool,
) -> pd.DataFrame:
    if restart:
        earlier = [out / r.folder for r in spec.runs if (out / r.folder).exists()]
        if progress or earlier:
            print(
                f"restart: discarding {len(earlier)} earlier run folder(s) in {out}",
                file=sys.stderr,
            )
        for folder in earlier:
            shutil.rmtree(folder)

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
        },
    )
    display = SweepDisplay(len(spec.runs), enabled=progress)
    for i, r in enumerate(spec.runs):
        folder = out / r.folder
        done = read_json(folder / "summary.json")
        if (
            isinstance(done, dict)
            and done.get("status") == "ok"
            and done.get("config_hash") == r.config_hash()
        ):
            display.skip(i, r)
            continue
        data, tokenizer = datasets[_data_key(r)]
        columns = {
            "baseline": r.variant == spec.baseline,
            **{axis: _cell(r.get(axis)) for axis in spec.axes()},
        }
        display.start(i, r, resumable_step(folder, r))
        from toolkit.train import train_run  # imported here: torch-heavy, and only runs need it

        try:
            summary = train_run(r, data, tokenizer, folder, plugins, display.step, columns)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            summary = record_failure(r, folder, exc, columns)
        display.end(summary)
        write_table(out)
    display.close()
    table = write_table(out)
    if spec.sampling_ablation is not None:
        from toolkit import sampling_ablation

        runs = sampling_ablation.model_runs(
            spec.sampling_ablation, [out / r.folder for r in spec.runs]
        )
        sampling_ablation.run_ablation(spec.sampling_ablation, runs, out, plugins, progress)
    return table


def resumable_step(folder: Path, r: RunSpec) -> int | None:
    """The step an interrupted run of this config would resume after, if any."""
    from toolkit.train import read_resume_state

    state = read_resume_state(folder, r.config_hash())
    return state["step"] if state else None


class OutputLock:
    """An exclusive lock on an output folder, so two sweeps never write one folder at once.
    The operating system drops it when the process ends, even when killed outright."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".ablate.lock"
        self.file: Any = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.file = self.path.open("a+")
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
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # closing releases the lock


def check_output_dir(out: Path) -> None:
    """The output folder must be a folder we can write; say so before any training."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"output path {out} is a file; give a folder with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SpecError(
            f"cannot write to output folder {out} ({exc.strerror}); choose another with --out"
        ) from None


def _data_key(r: RunSpec) -> str:
    return json.dumps(asdict(r.data), sort_keys=True, default=str)


def prepare_data(spec: Spec, plugins: Plugins) -> dict[str, tuple[TokenData, Any]]:
    """Tokenize each distinct corpus/tokenizer/split once and check every run fits its data."""
    datasets: dict[str, tuple[TokenData, Any]] = {}
    for r in spec.runs:
        key = _data_key(r)
        if key not in datasets:
            corpus_name, corpus_options = split_choice(r.data.corpus)
            tok_name, tok_options = split_choice(r.data.tokenizer)
            corpus = plugins.registry.get("corpus", corpus_name).build(**corpus_options)
            tokenizer = plugins.registry.get("tokenizer", tok_name).build(**tok_options)
            datasets[key] = (load_tokens(corpus, tokenizer, r.data.val_fraction), tokenizer)
        data = datasets[key][0]
        check_fits(r, data, spec.path)
        if r.model.init_from:
            check_init_from(r, data, spec.path, plugins)
    return datasets


def check_fits(r: RunSpec, data: TokenData, source: str) -> None:
    where = f"{source}: variant {r.variant!r}:"
    ctx, batch = r.model.context_length, r.train.batch_size
    if r.model.vocab_size is not None and r.model.vocab_size < data.vocab_size:
        raise SpecError(
            f"{where} model.vocab_size ({r.model.vocab_size}) is smaller than the tokenizer's "
            f"vocabulary ({data.vocab_size}); leave it unset to use the tokenizer's"
        )
    for split, tokens in (("validation", data.val), ("training", data.train)):
        if len(tokens) < ctx + 1:
            raise DataError(
                f"{where} model.context_length ({ctx}) is longer than the {split} split "
                f"({len(tokens)} tokens); lower context_length or use more data"
            )
    windows = count_windows(len(data.train), ctx, r.train.stride or ctx)
    if windows < batch:
        raise DataError(
            f"{where} the training split holds {windows} windows of {ctx + 1} tokens, fewer "
            f"than train.batch_size ({batch}); lower batch_size, stride or context_length"
        )


def check_init_from(r: RunSpec, data: TokenData, source: str, plugins: Plugins) -> None:
    """The checkpoint's weights fit this variant's model (checked on the meta device)."""
    import torch

    from toolkit.model import build_model
    from toolkit.train import initial_weights

    with torch.device("meta"):
        model = build_model(r.model_config(data.vocab_size), plugins)
    try:
        initial_weights(model, r.model.init_from)
    except ToolkitError as exc:
        raise SpecError(f"{source}: variant {r.variant!r}: {exc}") from None


def record_failure(
    r: RunSpec, folder: Path, exc: BaseException, columns: dict[str, Any]
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "error.txt", "".join(traceback.format_exception(exc)))
    message = str(exc) if isinstance(exc, ToolkitError) else f"{type(exc).__name__}: {exc}"
    summary = {
        "experiment": r.experiment,
        "variant": r.variant,
        "seed": r.seed,
        "status": "failed",
        **r.choices(),
        "error": " ".join(message.split()),
        "config_hash": r.config_hash(),
        **columns,
    }
    write_json(folder / "summary.json", summary)
    return summary


def _cell(value: Any) -> Any:
    """A config value as a table cell: scalars stay, choices and lists become short strings."""
    if isinstance(value, dict | list):
        from toolkit.spec import _label

        return _label(value)
    return value


class SweepDisplay:
    """Run i of n, step, loss and ETA: a live bar on a terminal, a line per evaluation otherwise."""

    def __init__(self, n_runs: int, enabled: bool = True) -> None:
        self.n, self.enabled = n_runs, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.run_times: list[float] = []
        self.started = 0.0
        self.label = ""

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def skip(self, i: int, r: RunSpec) -> None:
        self._print(f"[{i + 1}/{self.n}] {r.variant} seed={r.seed}: already finished, skipped")

    def start(self, i: int, r: RunSpec, resume_step: int | None = None) -> None:
        self.started = time.perf_counter()
        self.label = f"[{i + 1}/{self.n}] {r.variant} seed={r.seed}"
        if resume_step:
            self._print(f"{self.label}: resuming after step {resume_step}")
        remaining = self.n - i
        eta = ""
        if self.run_times:
            eta = f" (sweep ETA {_duration(remaining * sum(self.run_times) / len(self.run_times))})"
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=None,
                desc=self.label,
                unit="step",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            if eta:
                self.bar.write(f"{self.label}{eta}", file=sys.stderr)
        else:
            self._print(f"{self.label}: training{eta}")

    def step(self, step: int, total: int, loss: float, metrics: dict[str, float] | None) -> None:
        if self.bar is not None:
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(step - self.bar.n)
            if metrics or step % 10 == 0:
                post = {"loss": f"{loss:.3f}"}
                if metrics:
                    post["val"] = f"{metrics['val_loss']:.3f}"
                self.bar.set_postfix(post, refresh=False)
        elif metrics and self.enabled:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / step * (total - step)
            self._print(
                f"{self.label} step {step}/{total} train {metrics['train_loss']:.4f} "
                f"val {metrics['val_loss']:.4f} (run ETA {_duration(eta)})"
            )

    def end(self, summary: dict[str, Any]) -> None:
        self.run_times.append(time.perf_counter() - self.started)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        status = summary.get("status")
        if status == "ok":
            self._print(
                f"{self.label}: val_loss {summary['val_loss']:.4f} "
                f"({summary['tokens_per_s']:.0f} tokens/s)"
            )
        else:
            self._print(
                f"{self.label}: {status}"
                + (f" ({summary['error']})" if summary.get("error") else "")
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
