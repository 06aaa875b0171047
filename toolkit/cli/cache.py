"""`ablate cache list` and `ablate cache clear`: what the token cache holds and freeing its space
(toolkit.data.cache finds and removes the files)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from toolkit.cli.common import plural
from toolkit.errors import DataError

if TYPE_CHECKING:
    from toolkit.data.cache import CachedFile, CacheEntry, Selection

CORPUS_WIDTH = 44  # longer corpus descriptions end in "..."
SHOWN = 20  # entries a confirmation lists before "... and N more"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cache",
        help="list or clear the token cache (tokenized corpora kept between runs)",
        description="The token cache keeps each corpus + tokenizer + split tokenized, so later "
        "runs skip tokenizing. It lives in $ABLATE_CACHE_DIR, else $XDG_CACHE_HOME/ablate, else "
        "~/.cache/ablate (its tokens/ folder).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = actions.add_parser(
        "list",
        help="the cached corpora, newest first, with their sizes",
        description="One line per cached corpus (key, corpus, tokenizer, train/val tokens, size, "
        "last written), newest first; then learned tokenizer states, leftover temp files and "
        "the total size.",
    )
    _dir_option(q)
    q.set_defaults(func=cmd_list)

    q = actions.add_parser(
        "clear",
        help="remove cached corpora (all, by key prefix, or by age)",
        description="Remove cache entries (a key's token ids and metadata together). Without "
        "KEY_PREFIX: every entry, learned tokenizer state and leftover temp file; with: only "
        "the entries whose key starts with one (learned tokenizer states stay). Temp files "
        "younger than an hour are kept (a write may be under way). Asks first on a terminal; "
        "elsewhere pass --yes. Later runs simply tokenize again.",
    )
    q.add_argument(
        "prefixes", nargs="*", metavar="KEY_PREFIX", help="keys as `ablate cache list` shows them"
    )
    _dir_option(q)
    q.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="only what was written more than DAYS days ago (e.g. 30, 0.5); reading a cache "
        "does not make it newer",
    )
    q.add_argument("--yes", "-y", action="store_true", help="remove without asking")
    q.set_defaults(func=cmd_clear)


def _dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="the cache folder, as $ABLATE_CACHE_DIR names it (the one holding tokens/); "
        "default: $ABLATE_CACHE_DIR, else $XDG_CACHE_HOME/ablate, else ~/.cache/ablate",
    )


def cmd_list(args: argparse.Namespace) -> int:
    from toolkit.data.cache import TEMP_GRACE_S, scan

    contents = scan(args.dir)
    if not (contents.entries or contents.trained or contents.temps):
        why = "" if contents.exists else " (the folder does not exist yet)"
        print(f"token cache: {contents.folder}: empty{why}")
        return 0
    print(f"token cache: {contents.folder}")
    if contents.entries:
        rows = [_row(e) for e in contents.entries]
        header = ("KEY", "CORPUS", "TOKENIZER", "TOKENS (TRAIN/VAL[/TEST])", "SIZE", "MODIFIED")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        right = {3, 4}  # numbers line up on the right
        for r in [header, *rows]:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            print("  ".join(cells).rstrip())
    young = sum(time.time() - f.mtime < TEMP_GRACE_S for f in contents.temps)
    under_way = f" ({young} younger than an hour: maybe a write under way)" if young else ""
    print(f"{_entries(len(contents.entries))}: {_size(sum(e.size for e in contents.entries))}")
    print(f"learned tokenizer states: {len(contents.trained)}, {_size(_total(contents.trained))}")
    print(f"leftover temp files: {len(contents.temps)}, {_size(_total(contents.temps))}{under_way}")
    if contents.others:
        print(f"other files and folders: {contents.others} (not the cache's; never removed)")
    print(f"total: {_size(contents.size)}")
    return 0


def _row(e: CacheEntry) -> tuple[str, ...]:
    n_train, n_val, n_test, n = e.fact("n_train"), e.fact("n_val"), e.fact("n_test"), e.fact("n")
    tokens = "?"
    if _ints(n_train, n_val):
        tokens = f"{n_train:,}/{n_val:,}" + (f"/{n_test:,}" if _ints(n_test) and n_test else "")
    elif _ints(n):  # not split (joined token shards)
        tokens = f"{n:,}"
    return (
        e.short,
        _corpus(e),
        str(e.fact("tokenizer") or "?"),
        tokens,
        _size(e.size),
        datetime.fromtimestamp(e.mtime).strftime("%Y-%m-%d %H:%M"),
    )


def _corpus(e: CacheEntry) -> str:
    if not e.complete:
        suffixes = {f.path.suffix for f in e.files}
        missing = "ids" if ".npy" not in suffixes else "metadata"
        if ".json" in suffixes and e.meta is None:
            missing = "readable metadata"
        return f"(incomplete: no {missing}; rebuilt when used)"
    text = str(e.fact("corpus") or "?")
    if e.stale:
        text = f"(old cache format) {text}"
    return text if len(text) <= CORPUS_WIDTH else text[: CORPUS_WIDTH - 3] + "..."


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def cmd_clear(args: argparse.Namespace) -> int:
    from toolkit.data.cache import remove, scan, select

    days = args.older_than
    if days is not None and not (math.isfinite(days) and days >= 0):
        raise DataError(f"--older-than takes a finite number of days, 0 or more; got {days:g}")
    contents = scan(args.dir)
    selection = select(contents, args.prefixes, None if days is None else days * 86400.0)
    if not selection:
        where = "" if contents.exists else " (the folder does not exist)"
        print(f"token cache: {contents.folder}{where}: nothing to remove")
        return 0
    what = f"{_what(selection)} from {selection.folder}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise DataError(
                f"cache clear would remove {what}; stdin is not a terminal, so pass --yes to "
                f"remove them"
            )
        if not _confirm(selection, what):
            print("nothing removed")
            return 1
    done = remove(selection)
    print(
        f"removed {plural(done.removed, 'file')} from {selection.folder}; freed {_size(done.freed)}"
    )
    if done.failed:
        path, why = done.failed[0]
        more = f" and {len(done.failed) - 1} more" if len(done.failed) > 1 else ""
        print(f"ablate: could not remove {path} ({why}){more}", file=sys.stderr)
        return 1
    return 0


def _what(s: Selection) -> str:
    """'2 entries (5.8 MiB), 1 learned tokenizer state (12.3 KiB)': the non-empty parts."""
    parts = [
        (len(s.entries), _entries(len(s.entries)), sum(e.size for e in s.entries)),
        (len(s.trained), plural(len(s.trained), "learned tokenizer state"), _total(s.trained)),
        (len(s.temps), plural(len(s.temps), "leftover temp file"), _total(s.temps)),
    ]
    return ", ".join(f"{text} ({_size(size)})" for n, text, size in parts if n)


def _confirm(s: Selection, what: str) -> bool:
    print(f"this removes {what}:")
    for e in s.entries[:SHOWN]:
        print(f"  {e.short}  {_corpus(e)}  {_size(e.size)}")
    if len(s.entries) > SHOWN:
        print(f"  ... and {len(s.entries) - SHOWN} more")
    try:
        answer = input(f"remove them, freeing {_size(s.size)}? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _total(files: list[CachedFile]) -> int:
    return sum(f.size for f in files)


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def _size(n: float) -> str:
    """_size(512) -> '512 B'; _size(3_100_000) -> '3.0 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
