"""What several commands share: the --plugin, --set and --device options, the checks behind
them, and small text helpers. Each command module adds its own options on top."""

from __future__ import annotations

import argparse

from toolkit.api.manager import Plugins, load_plugins
from toolkit.errors import ToolkitError, one_line


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
    """The device, once torch has shown it can place a tensor there; else a one-line error."""
    import torch  # torch-heavy: only the commands that compute need it

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ToolkitError(
            f"--device {device}: {one_line(exc, 200)}; use cpu or an available accelerator"
        ) from None
    return device


def plural(n: int, word: str) -> str:
    """plural(1, 'run') -> '1 run'; plural(3, 'run') -> '3 runs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def plugins_of(args: argparse.Namespace) -> Plugins:
    """The process's plugins with the --plugin modules."""
    return load_plugins(tuple(args.plugins))
