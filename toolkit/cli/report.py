"""`ablate report DIR...`: the comparison of experiment folders (toolkit.analysis)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="compare the variants of experiment folders: table, statistics, figures, report",
        description="Print the comparison table of one or several experiment folders (finished, "
        "running or interrupted) and write report.md, report.html, figures/*.png and the data "
        "behind them (report_runs.csv, report_summary.csv, report_curves.csv). Several folders "
        "must share a baseline.",
    )
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="experiment output folders, e.g. runs/quickstart"
    )
    p.add_argument(
        "--out",
        metavar="REPORT_DIR",
        help="where to write the report (default: DIR; for several, report-<a>+<b> beside the "
        "first)",
    )
    p.add_argument(
        "--correction",
        choices=["holm", "none"],
        default="holm",
        help="the p-values the verdicts (better, worse, n.s.) and the figures' n.s. marks read: "
        "holm (default), adjusted by Holm-Bonferroni over the comparisons with the baseline, "
        "or none, as they are",
    )
    p.add_argument(
        "--baseline",
        metavar="VARIANT",
        help="compare every variant against this one instead of the spec's baseline (the "
        "report's Δ, p-values, verdicts and scores after training)",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from toolkit.analysis.render import write_report

    result = write_report(args.dirs, args.out, correction=args.correction, baseline=args.baseline)
    print(result.text)
    print(f"report: {result.markdown} and {result.html} ({len(result.figures)} figures)")
    return 0
