"""The book's chapter-5 run through the toolkit, beside the book's own curve:
`python benchmarks/book_ch05.py the-verdict.txt [--seeds 123 1 2] [--book-log LOG ...]`.

Trains experiments/book_ch05.toml on the given text (GPT-2 small, 90 steps of 2 x 256 tokens;
about 8 minutes per seed on 2 cores), or reads the runs already in --out, and prints each
seed's train and validation loss at every evaluation beside the book's 18 printed points
(FACTS: "Build a Large Language Model From Scratch", chapter 5, seed 123). The book evaluates
after 1, 6, ..., 86 optimizer steps, the toolkit after 5, 10, ..., 90: rows pair the toolkit's
step s with the book's step s + 1.

--book-log takes what the book's own code printed ("Ep 1 (Step 000000): Train loss 9.781, Val
loss 9.933" lines), one file per seed it ran with, and adds the band those runs span (min and
max at each point), and whether the toolkit's final losses fall inside it. Not a test: it passes
or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import toolkit  # noqa: E402

# The book's printed curve (train, val) after 1, 6, ..., 86 optimizer steps, seed 123.
BOOK = [
    (9.781, 9.933), (8.111, 8.339), (6.661, 7.048), (5.961, 6.616), (5.726, 6.600),
    (5.201, 6.348), (4.417, 6.278), (4.069, 6.226), (3.732, 6.160), (2.850, 6.179),
    (2.427, 6.141), (2.104, 6.134), (1.882, 6.233), (1.320, 6.238), (0.985, 6.242),
    (0.717, 6.293), (0.541, 6.393), (0.391, 6.452),
]  # fmt: skip
BOOK_LINE = re.compile(r"Step (\d+)\): Train loss ([\d.]+), Val loss ([\d.]+)")


def book_curves(logs: list[Path]) -> list[dict[int, tuple[float, float]]]:
    """Each log's points, keyed by optimizer steps taken (the book's global step + 1)."""
    curves = []
    for log in logs:
        points = {
            int(m[1]) + 1: (float(m[2]), float(m[3]))
            for m in BOOK_LINE.finditer(log.read_text(encoding="utf-8"))
        }
        if not points:
            raise SystemExit(f"{log}: no 'Step N): Train loss X, Val loss Y' lines in it")
        curves.append(points)
    return curves


def ours(folder: Path) -> dict[int, tuple[float, float]]:
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {m["step"]: (m["train_loss"], m["val_loss"]) for m in map(json.loads, lines)}


def band(curves: list[dict[int, tuple[float, float]]], step: int, which: int) -> str:
    values = [c[step][which] for c in curves if step in c]
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", help="the text to train on (the book uses the-verdict.txt)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[123])
    parser.add_argument("--out", default="runs/book_ch05-benchmark")
    parser.add_argument("--book-log", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    text = Path(args.text).resolve()
    if not text.is_file():
        raise SystemExit(f"{args.text}: no such file; give the text to train on")
    curves = book_curves(args.book_log)
    seeds = ",".join(map(str, args.seeds))
    overrides = [f"data.path={text}", f"seeds=[{seeds}]"]
    toolkit.run(ROOT / "experiments/book_ch05.toml", args.out, overrides=overrides)
    mine = {s: ours(Path(args.out) / f"base/seed-{s}") for s in args.seeds}

    header = ["step", "book train", "book val"]
    if curves:
        header += ["band train", "band val"]
    for s in args.seeds:
        header += [f"seed {s} train", "val", "Δ train", "Δ val"]
    rows = []
    for i, (book_train, book_val) in enumerate(BOOK):
        step = 5 * i + 1  # the book's; the toolkit's is one before, 5 * i
        row = [f"{5 * i}/{step}", f"{book_train:.3f}", f"{book_val:.3f}"]
        if curves:
            row += [band(curves, step, 0), band(curves, step, 1)]
        for s in args.seeds:
            got = mine[s].get(5 * i)
            row += (
                [f"{got[0]:.3f}", f"{got[1]:.3f}", f"{got[0] - book_train:+.3f}",
                 f"{got[1] - book_val:+.3f}"]
                if got
                else ["-"] * 4
            )  # fmt: skip
        rows.append(row)
    last = max(mine[args.seeds[0]])
    row = [f"{last}/-", "-", "-"] + (["-", "-"] if curves else [])
    for s in args.seeds:
        train, val = mine[s][last]
        row += [f"{train:.3f}", f"{val:.3f}", "-", "-"]
    rows.append(row)
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(
        "step: the toolkit's optimizer steps / the book's (the book evaluates after 1, 6, ..., "
        "86 steps). Δ: the toolkit minus the book's printed seed-123 figure."
    )
    if curves:
        finals = [c[max(c)] for c in curves]
        low = [min(f[k] for f in finals) for k in (0, 1)]
        high = [max(f[k] for f in finals) for k in (0, 1)]
        print(
            f"the book's own code, {len(curves)} seeds, final train {low[0]:.3f}-{high[0]:.3f}, "
            f"val {low[1]:.3f}-{high[1]:.3f} (after {max(max(c) for c in curves)} steps)"
        )
        for s in args.seeds:
            train, val = mine[s][last]
            inside = [
                "inside" if lo <= v <= hi else "outside"
                for v, lo, hi in zip((train, val), low, high, strict=True)
            ]
            print(
                f"toolkit seed {s}: final train {train:.3f} ({inside[0]} the band), "
                f"val {val:.3f} ({inside[1]})"
            )


if __name__ == "__main__":
    main()
