"""The device a trained model is used on (generation, evaluation, benchmark tasks), checked
once, before anything loads: `check_device("cuda:1", "--device")`."""

from __future__ import annotations

import torch

from toolkit.errors import ToolkitError, one_line

KINDS = ("cpu", "cuda", "mps")


def check_device(device: str, where: str = "device") -> str:
    """The device, once torch has shown it can place a tensor there; else a one-line
    ToolkitError naming `where` it came from. Only computing devices: 'meta' places tensors
    without values, which nothing here can read."""
    kind = str(device).partition(":")[0]
    if kind not in KINDS:
        raise ToolkitError(
            f"{where} {device}: not a device models run on; use {', '.join(KINDS)} or cuda:N"
        )
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ToolkitError(
            f"{where} {device}: {one_line(exc, 200)}; use cpu or an available accelerator"
        ) from None
    return device
