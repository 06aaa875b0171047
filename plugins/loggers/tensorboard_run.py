"""TensorBoard: ``ABLATE_TENSORBOARD=DIR`` gives each run a SummaryWriter in
``DIR/<experiment>/<variant>/seed-<n>``.

One scalar per metric at each evaluation, the resolved config as a text table at the start, and
at the end the config as hparams with the final metrics (``final/val_loss``, ...). The folder
mirrors the run: it is rewritten from metrics.jsonl whenever the run (re)starts, so a resumed
run holds every evaluation once. Needs the ``tensorboard`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.loggers.shared import FINAL_METRICS, flatten, is_number, numbers, text, warn
from toolkit.errors import PluginError, one_line
from toolkit.names import run_folder, slug

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo

TENSORBOARD_ENV = "ABLATE_TENSORBOARD"


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise PluginError(
            f"{TENSORBOARD_ENV} is set but the tensorboard package is not installed; "
            f'pip install "gpt-ablate[tensorboard]" (or unset {TENSORBOARD_ENV})'
        ) from None


class TensorBoardLogger:
    """One run's SummaryWriter in DIR/<experiment>/<variant>/seed-<n>."""

    name = TENSORBOARD_ENV

    def __init__(self, run: RunInfo, root: Path, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = run.config
        self.folder = root / slug(run.experiment) / run_folder(run.variant, run.seed)
        self.failed = False
        try:
            # The folder mirrors the run: an earlier attempt's event files go (TensorBoard
            # would merge them by file name), and a resumed run rewrites its earlier
            # evaluations from metrics.jsonl below.
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
            self.writer = SummaryWriter(log_dir=str(self.folder))
            self.writer.add_text("config", _markdown_table(flatten(run.config)), 0)
        except Exception as exc:
            raise PluginError(
                f"{TENSORBOARD_ENV}: cannot write to {self.folder} ({one_line(exc, 300)})"
            ) from None
        for record in history:
            self.log(record["step"], record)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            for key, value in numbers(metrics).items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()  # live: evaluations are rare, so each shows at once
        except Exception as exc:
            self.failed = warn(self.name, exc)

    def end(self, summary: dict[str, Any] | None) -> None:
        try:
            if summary is not None and not self.failed:
                from torch.utils.tensorboard.summary import hparams

                step = int(summary.get("steps") or 0)
                final = {
                    f"final/{k}": float(summary[k])
                    for k in FINAL_METRICS
                    if is_number(summary.get(k))
                }
                params = {k: _hparam(v) for k, v in flatten(self.config)}
                params["status"] = str(summary.get("status"))
                # Written by this run's own writer (add_hparams would open a second one).
                for proto in hparams(params, final):
                    self.writer.file_writer.add_summary(proto, step)
                for key, value in final.items():
                    self.writer.add_scalar(key, value, step)
        except Exception as exc:
            self.failed = warn(self.name, exc)
        finally:
            try:
                self.writer.close()
            except Exception as exc:
                warn(self.name, exc)


def _hparam(value: Any) -> float | str:
    return value if is_number(value) else text(value)


def _markdown_table(items: Iterator[tuple[str, Any]]) -> str:
    rows = "\n".join(f"| {k} | {text(v).replace('|', '&#124;')} |" for k, v in items)
    return "| key | value |\n|---|---|\n" + rows
