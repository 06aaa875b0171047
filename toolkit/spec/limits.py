"""Bounds on what a spec may ask for, checked before the expensive part of reading it.

A spec is data typed by a person, but a mistake (or a hostile file) must still end in one line,
not in a RecursionError, gigabytes of memory or an hour of validation. Checked here:

- the text: at most MAX_SPEC_BYTES, brackets and braces nested at most MAX_NESTING deep, bare
  dotted keys of at most MAX_KEY_DOTS dots (`a.b.c`), all before the TOML parser sees it;
- the sweep: at most `max_runs` runs (variants x seeds; DEFAULT_MAX_RUNS unless the caller
  raises it, `ablate run --max-runs N`), counted before the variants are expanded;
- seeds within what torch and numpy take (0 .. 2**63 - 1), and names short enough to be
  folder names (long variant names are shortened by toolkit.names.slug instead).

Every limit is far beyond a real experiment. Not here: what the values mean (validate.py).
"""

from __future__ import annotations

import math
from typing import Any

from toolkit.errors import SpecError
from toolkit.model.config import LIMITS

MAX_SPEC_BYTES = 1 << 20  # 1 MiB of TOML
MAX_NESTING = 32  # [ and { inside each other
MAX_KEY_DOTS = 8  # model.attention.n_kv_heads has 2
DEFAULT_MAX_RUNS = 1000
MAX_SEED = 2**63 - 1
MAX_NAME = 100  # characters of an experiment name (it names the output folder)
# New tokens one generation may ask for: as many as the longest context this toolkit builds
# (the ids buffer is allocated up front, so a typo of a few more digits must not reach it).
MAX_NEW_TOKENS = LIMITS["context_length"]
# Prompts one sampling ablation continues: far beyond the 8 to a few hundred an ablation uses.
# They are continued in one batch and scored from (prompts, prompt + new tokens, vocabulary)
# log-probabilities held at once, so a typo of a few more digits must fail at validation, not
# exhaust memory after training.
MAX_PROMPTS = 1024


def check_text(text: str, where: str) -> None:
    """Size, nesting and dotted keys of TOML text (a file, or a --set value), before parsing.
    Strings are skipped: brackets and dots inside quotes are text."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{where}: {len(text):,} characters; a spec is at most {MAX_SPEC_BYTES:,} "
            f"(put data in files and name them in the spec)"
        )
    stack: list[str] = []  # open [ and {
    quote = ""  # the string being read: ", ', \"\"\" or '''
    key = True  # reading a key: at a line's start, or after { or , in an inline table
    dots = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote[0] == '"':
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
            i += 1
            continue
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "[{":
            header = c == "[" and key  # [table.name] or [[array.of.tables]]: a key too
            stack.append(c)
            if len(stack) > MAX_NESTING:
                raise SpecError(
                    f"{where}: brackets nested more than {MAX_NESTING} deep; a spec needs a few"
                )
            key = c == "{" or header
            dots = 0 if c == "{" else dots
        elif c in "]}":
            if stack:
                stack.pop()
        elif (c == "\n" and not stack) or (c == "," and stack and stack[-1] == "{"):
            key, dots = True, 0
        elif c == "=":
            key = False
        elif c == "." and key:
            dots += 1
            if dots > MAX_KEY_DOTS:
                raise SpecError(
                    f"{where}: a key with more than {MAX_KEY_DOTS} dots; spec keys are like "
                    f"'model.norm.eps'"
                )
        i += 1


def count_runs(raw: dict[str, Any], n_seeds: int) -> int:
    """Runs a spec document asks for (explicit variants + the grid's points, or one base
    variant, times the seeds), without expanding anything."""
    explicit = raw.get("variants", [])
    n = len(explicit) if isinstance(explicit, list) else 0
    points = 0
    grid = raw.get("grid", {})
    if isinstance(grid, dict) and grid:
        points = math.prod(max(1, len(v)) if isinstance(v, list) else 1 for v in _leaves(grid))
    return max(1, n + points) * max(1, n_seeds)


def _leaves(table: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in table.values():
        out.extend(_leaves(value) if isinstance(value, dict) else [value])
    return out


def check_runs(raw: dict[str, Any], n_seeds: int, max_runs: int, where: str) -> None:
    if max_runs < 1:
        raise SpecError(f"--max-runs must be at least 1 (max_runs= in Python), got {max_runs}")
    runs = count_runs(raw, n_seeds)
    if runs > max_runs:
        raise SpecError(
            f"{where}: {runs:,} runs (variants x {n_seeds} seed(s)) is more than the limit of "
            f"{max_runs:,}; pass --max-runs {runs} (max_runs= in Python) if you mean it"
        )


def check_seeds(seeds: list[int], where: str) -> None:
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise SpecError(f"{where}: seed {bad[0]} is out of range; seeds go from 0 to 2**63 - 1")


def check_name(name: str, where: str) -> None:
    if len(name) > MAX_NAME:
        raise SpecError(
            f"{where}: name is {len(name)} characters long; at most {MAX_NAME} (it names the "
            f"output folder)"
        )
