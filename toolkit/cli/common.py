"""What several commands share: the --plugin, --set and --device options, the checks behind
them, and small text helpers. Each command module adds its own options on top."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.api.manager import Plugins, load_plugins
from toolkit.errors import DataError
from toolkit.files import read_json


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a plugin module by dotted name (repeatable)",
    )


def add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default: cpu)")


def check_device(device: str) -> str:
    """--device, checked as the Python API checks it (toolkit.inference.device)."""
    from toolkit.inference import device as devices  # torch-heavy: not at `ablate --help`

    return devices.check_device(device, "--device")


def plural(n: int, word: str) -> str:
    """plural(1, 'run') -> '1 run'; plural(3, 'run') -> '3 runs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def plugins_of(args: argparse.Namespace) -> Plugins:
    """The process's plugins with the --plugin modules."""
    return load_plugins(tuple(args.plugins))


def scoring_targets(sources: list[str]) -> list[tuple[Path, bool]]:
    """(path to score, whether it is a run folder to record into) for each source: an
    experiment folder gives its finished runs that hold a checkpoint."""
    targets: list[tuple[Path, bool]] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_file():
            targets.append((path, False))
        elif (path / "summary.json").is_file() or (path / "checkpoint.pt").is_file():
            if not (path / "checkpoint.pt").is_file():
                raise DataError(f"{path} has no checkpoint.pt to score (train.checkpoint off?)")
            targets.append((path, (path / "summary.json").is_file()))
        elif path.is_dir():
            runs = [
                s.parent
                for s in sorted(path.glob("*/seed-*/summary.json"))
                if (read_json(s) or {}).get("status") == "ok"
                and (s.parent / "checkpoint.pt").is_file()
            ]
            if not runs:
                raise DataError(
                    f"{path} holds no finished run with a checkpoint.pt; give an experiment "
                    f"folder `ablate run` wrote, a run folder or a checkpoint file"
                )
            targets += [(r, True) for r in runs]
        else:
            raise DataError(f"{source}: no such file or folder")
    return targets
