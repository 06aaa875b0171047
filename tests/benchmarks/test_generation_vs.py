"""benchmarks/generation_vs.py runs: each checkout generates in its own process, and the ratio
is printed; a folder that is not a checkout is a usage error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "generation_vs.py"


def script(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_checkout_against_itself_prints_each_pair_and_the_ratio():
    done = script(str(ROOT), "--pairs", "1", "--tokens", "4")
    assert done.returncode == 0, done.stderr
    assert re.search(r"pair 1: this checkout [\d,]+ tokens/s, .* [\d,]+ tokens/s: x\d", done.stdout)
    assert re.search(r"this checkout / the other, cached generation: x\d+\.\d\d", done.stdout)


def test_a_folder_without_the_toolkit_is_a_usage_error(tmp_path):
    done = script(str(tmp_path))
    assert done.returncode == 2
    assert "give another checkout of this repository" in done.stderr
