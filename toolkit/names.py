"""How values are written as text in names: a config value in a variant name or a table cell
(`label`), and any name as a file or folder name (`slug`). One spelling everywhere, so a
variant, its run folder, its table row and its logger run always match."""

from __future__ import annotations

import hashlib
import re
from typing import Any


def label(value: Any) -> str:
    """A value as it reads in a variant name: {'name': 'top-k', 'k': 5} -> 'top-k(k=5)',
    True -> 'true', [1, 2] -> '[1,2]', 'rmsnorm' -> 'rmsnorm'."""
    if isinstance(value, dict):
        opts = ",".join(f"{k}={label(v)}" for k, v in value.items() if k != "name")
        return f"{value.get('name', '?')}({opts})" if opts else str(value.get("name", "?"))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(label(v) for v in value) + "]"
    return str(value)


MAX_SLUG = 100  # characters: far below any file system's 255-byte limit on a name


def slug(name: str) -> str:
    """A name as a safe file or folder name: 'lr=1e-3,norm=rms/x' -> 'lr=1e-3,norm=rms_x'.
    A longer name than MAX_SLUG keeps its start and ends in a hash of the whole name, so any
    name works and two long names stay apart."""
    s = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name).strip(".") or "_"
    if len(s) > MAX_SLUG:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        s = f"{s[: MAX_SLUG - 11]}-{digest}"
    return s


# Folders an experiment folder holds besides its variants': no variant may be named so.
RESERVED_FOLDERS = {
    "figures": "the report's figures",
    "sampling": "a sampling ablation's results",
    "tune": "the tuning runs",
}


def run_folder(variant: str, seed: int) -> str:
    """A run's folder inside its experiment's: 'norm=rms/x', 3 -> 'norm=rms_x/seed-3'."""
    return f"{slug(variant)}/seed-{seed}"
