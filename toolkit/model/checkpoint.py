"""THE checkpoint format: `{"model": state_dict, "config": ModelConfig fields, ...}` in one
torch.save file, written by training, `ablate import` and save_checkpoint, read back here only.

    save_checkpoint(config, state, path, tokenizer="gpt2")   atomically
    read_checkpoint(path)          -> the dict (tensors and plain data only, memory-mapped)
    locate_checkpoint(source)      -> (checkpoint file, the run's config.json or None)
    open_checkpoint(source)        -> Checkpoint: the file's contents and the run beside it
    load_model(source, plugins)    -> the GPT the checkpoint describes, with its weights
    model_from_state(config, state, plugins, where, run_plugins)  the same from a config and
                                      a state dict (a component no plugin registers: an error
                                      naming the plugins the run recorded, to pass --plugin)
    check_fits(config, state, plugins, where)        names and shapes, on the meta device
    initial_weights(model, source) -> a checkpoint's weights arranged for another model
                                      (model.init_from: tying and untying allowed)

`source` is always a checkpoint file or a run folder (its checkpoint.pt). Every problem is a
DataError with one line naming the file. Only tensors and plain data are ever unpickled
(weights_only). Not here: other code bases' formats (interop.py), resume state (training).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.api.manager import Plugins, load_plugins
from toolkit.errors import ComponentError, DataError, one_line
from toolkit.files import write_atomic
from toolkit.model.config import COMPONENT_SLOTS, ModelConfig
from toolkit.model.gpt import GPT, build_model

CHECKPOINT_FILE = "checkpoint.pt"
StateDict = dict[str, torch.Tensor]


def save_checkpoint(
    config: ModelConfig, state_dict: StateDict, path: str | os.PathLike[str], **extra: Any
) -> Path:
    """Write {"model": state_dict, "config": config's fields, **extra} atomically; `extra`
    entries are plain data (e.g. tokenizer="gpt2"). Returns the path."""
    path = Path(path).expanduser()
    buffer = io.BytesIO()
    torch.save({"model": state_dict, "config": config.to_dict(), **extra}, buffer)
    write_atomic(path, buffer.getvalue())
    return path


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only (tensors and plain data only) and mmap (the file is mapped,
    not read into memory); files in the legacy (pre-1.6) format cannot be mapped and are read.
    A file that does not load is a DataError; one that holds other pickled objects is refused
    without unpickling them."""
    try:
        try:
            return _torch_load(path, mmap=True)
        except pickle.UnpicklingError:
            raise
        except Exception as exc:
            if not ("mmap" in str(exc) and "zipfile" in str(exc).lower()):
                raise DataError(
                    f"cannot read {path} ({one_line(exc, 200)}); it is corrupt or not a "
                    f"torch.save file of tensors"
                ) from None
        return _torch_load(path, mmap=False)  # the legacy format: read, not mapped
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # a pickle of objects torch refused
            raise DataError(
                f"cannot read {path}: it holds pickled Python objects besides tensors and "
                f"plain data, which the toolkit never unpickles"
            ) from None
        raise DataError(
            f"cannot read {path} ({one_line(exc, 200)}); it is corrupt or not a torch.save "
            f"file of tensors"
        ) from None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path} ({one_line(exc, 200)})") from None


def _torch_load(path: Path, *, mmap: bool) -> Any:
    # torch warns about pickle protocols before it refuses a file; the refusal is what counts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=True, mmap=mmap, map_location="cpu")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint file's {"model", "config", ...}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found")
    try:
        checkpoint = load_tensors(path)
    except DataError as exc:
        if "pickled" in str(exc):
            raise DataError(
                f"checkpoint {path} holds pickled Python objects besides tensors, which the "
                f"toolkit never unpickles: it is not a toolkit checkpoint"
            ) from None
        raise DataError(
            f"checkpoint {path} cannot be read; it is corrupt or not a toolkit checkpoint: "
            f"retrain the run or point to another file"
        ) from None
    if not isinstance(checkpoint, dict) or not {"model", "config"} <= set(checkpoint):
        raise DataError(f"checkpoint {path} is not a toolkit checkpoint (no model and config)")
    return checkpoint


def locate_checkpoint(source: str | os.PathLike[str]) -> tuple[Path, dict[str, Any] | None]:
    """(checkpoint file, the run's config.json or None) for a checkpoint file or a run folder."""
    source = Path(source).expanduser()
    if source.is_dir():
        checkpoint, config_path = source / CHECKPOINT_FILE, source / "config.json"
        if not checkpoint.is_file():
            if (source / "experiment.json").is_file():
                why = "it is an experiment folder; give one of its run folders (VARIANT/seed-N)"
            elif config_path.is_file():
                why = "its run failed or has not finished, or ran with train.checkpoint = false"
            else:
                why = "it is not a run folder"
            raise DataError(f"no {CHECKPOINT_FILE} in {source}: {why}")
    elif source.is_file():
        checkpoint, config_path = source, source.parent / "config.json"
    else:
        raise DataError(f"{source} does not exist; give a run folder or a checkpoint file")
    run_config = None
    if config_path.is_file():
        try:
            run_config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Not silently: what the run recorded (its corpus, tokenizer, sampling) is lost.
            warnings.warn(
                f"{config_path} cannot be read ({one_line(exc, 120)}), so the run's settings "
                f"beside {checkpoint.name} are not used; restore it from a copy if you can",
                stacklevel=3,
            )
            run_config = None
        # A config.json beside a checkpoint is the run's only when it describes a run.
        if not (isinstance(run_config, dict) and "model_resolved" in run_config):
            run_config = None
    return checkpoint, run_config


@dataclass
class Checkpoint:
    """A checkpoint's contents and the run that wrote it (when its config.json is beside it)."""

    path: Path
    config: dict[str, Any]  # ModelConfig fields
    state: StateDict
    tokenizer: Any  # the tokenizer choice recorded in the file (training, ablate import)
    run: dict[str, Any] | None  # the run's config.json
    tokenizer_state: dict[str, Any] | None = None  # what a learned tokenizer (bpe) learned

    def model(self, plugins: Plugins | None = None) -> GPT:
        recorded = (self.run or {}).get("plugins")
        modules = [m for m in recorded if isinstance(m, str)] if isinstance(recorded, list) else []
        return model_from_state(
            self.config, self.state, plugins, where=f"checkpoint {self.path}", run_plugins=modules
        )


def open_checkpoint(source: str | os.PathLike[str]) -> Checkpoint:
    path, run = locate_checkpoint(source)
    raw = read_checkpoint(path)
    return Checkpoint(
        path, raw["config"], raw["model"], raw.get("tokenizer"), run, raw.get("tokenizer_state")
    )


def load_model(source: str | os.PathLike[str], plugins: Plugins | None = None) -> GPT:
    """The model a checkpoint file or run folder holds, on the CPU, in eval mode."""
    return open_checkpoint(source).model(plugins).eval()


def model_from_state(
    config: ModelConfig | dict[str, Any],
    state: StateDict,
    plugins: Plugins | None = None,
    *,
    where: str = "the checkpoint",
    run_plugins: list[str] | tuple[str, ...] = (),
) -> GPT:
    """The GPT a config builds, with these weights: every name and shape must match.
    run_plugins: the plugin modules the run recorded (config.json), named in the error when
    one of its components is not registered."""
    plugins = plugins or load_plugins()
    try:
        model = build_model(config, plugins)
    except ComponentError:
        unknown = _unregistered(config, plugins)
        if unknown is None:
            raise
        raise ComponentError(_unregistered_message(*unknown, plugins, where, run_plugins)) from None
    _raise_unless_fits(model.state_dict(), state, where)
    model.load_state_dict(state)
    return model


def _unregistered(config: ModelConfig | dict[str, Any], plugins: Plugins) -> tuple[str, str] | None:
    """(kind, name) of the first component the config chooses that no loaded plugin
    registers, or None."""
    try:
        config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
    except (ComponentError, TypeError):
        return None
    for slot, kind in COMPONENT_SLOTS.items():
        choice = getattr(config, slot)
        name = choice.get("name") if isinstance(choice, dict) else choice
        if isinstance(name, str) and (kind, name) not in plugins.registry:
            return kind, name
    return None


def _unregistered_message(
    kind: str, name: str, plugins: Plugins, where: str, run_plugins: list[str] | tuple[str, ...]
) -> str:
    """Why a checkpoint's component is not registered, and what to pass: the plugins its run
    recorded, or, for a run that recorded none (older runs did not), any plugin it came from."""
    known = ", ".join(plugins.registry.names(kind)) or "none registered"
    said = f"{where}: its {kind} {name!r} is not registered (registered: {known}); "
    absent = [m for m in run_plugins if m not in plugins.info]
    if absent:
        flags = " ".join(f"--plugin {m}" for m in absent)
        return (
            f"{said}its run trained with plugin {', '.join(absent)}: pass {flags} as when it "
            f"trained (from the folder that holds it)"
        )
    if run_plugins:
        return (
            f"{said}its run's plugin {', '.join(run_plugins)} is loaded but registers no "
            f"{kind} {name!r} now; load the version the run trained with"
        )
    return (
        f"{said}if it came from a plugin, pass --plugin MODULE as when it trained (from the "
        f"folder that holds it)"
    )


def check_fits(
    config: ModelConfig | dict[str, Any],
    state: dict[str, Any],
    plugins: Plugins | None = None,
    *,
    where: str = "the checkpoint",
) -> None:
    """The config builds a model whose names and shapes are the state dict's: checked on the
    meta device, without allocating the weights."""
    _raise_unless_fits(meta_state_dict(config, plugins), state, where)


def meta_state_dict(
    config: ModelConfig | dict[str, Any], plugins: Plugins | None = None
) -> StateDict:
    """The state dict of the model a config builds, on the meta device: names and shapes,
    nothing allocated."""
    with torch.device("meta"):
        return build_model(config, plugins).state_dict()


def mismatch(expected: dict[str, Any], state: dict[str, Any]) -> str | None:
    """What keeps `state` from loading where `expected` (a state dict, or {name: shape}) is
    wanted, in words ("missing a, b", "unexpected c", "shape of d: (2, 3) in the weights,
    (3, 3) in the model"), or None when every name and shape matches."""

    def shape(x: Any) -> tuple[int, ...]:
        return tuple(x.shape) if hasattr(x, "shape") else tuple(x)

    missing = sorted(set(expected) - set(state))
    if missing:
        return f"missing {', '.join(missing[:3])}"
    extra = sorted(set(state) - set(expected))
    if extra:
        return f"unexpected {', '.join(extra[:3])}"
    for key, want in expected.items():
        if shape(state[key]) != shape(want):
            return f"shape of {key}: {shape(state[key])} in the weights, {shape(want)} in the model"
    return None


def _raise_unless_fits(expected: dict[str, Any], state: dict[str, Any], where: str) -> None:
    problem = mismatch(expected, state)
    if problem:
        raise DataError(f"{where}: the weights do not match its config ({problem})")


def initial_weights(model: nn.Module, source: str | os.PathLike[str]) -> StateDict:
    """The checkpoint's weights arranged for `model`, or a DataError saying which parameter
    does not fit. Untying is allowed (the head starts as a copy of the embedding); tying keeps
    the embedding; anything that changes a weight's shape (emb_dim, n_heads with gqa, the
    vocabulary) or the set of weights (another norm or attention) is not."""
    state = dict(read_checkpoint(locate_checkpoint(source)[0])["model"])
    target = model.state_dict()
    tied = model.config.tie_embeddings
    if tied:
        state.pop("out_head.weight", None)
        target = {k: v for k, v in target.items() if k != "out_head.weight"}
    elif "out_head.weight" not in state and "tok_emb.weight" in state:
        state["out_head.weight"] = state["tok_emb.weight"]
    problem = mismatch(target, state)
    if problem:
        raise DataError(
            f"model.init_from {source}: the checkpoint's weights do not fit this model "
            f"({problem}); only changes that keep every weight (dropout, tying, sampler, "
            f"training) can start from it"
        )
    return state


def load_initial_weights(model: nn.Module, source: str | os.PathLike[str]) -> None:
    """Start `model` from a checkpoint's weights (see initial_weights)."""
    model.load_state_dict(initial_weights(model, source), strict=not model.config.tie_embeddings)
