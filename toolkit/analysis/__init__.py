"""Comparing the variants of finished (or still running) experiments: `ablate report`.

One module per step, each importable alone:

- load.py: read experiment folders into one `Experiments` (runs, baseline, missing runs, curves);
- table.py: the per-variant table and its statistics (`summarize`, `compare`);
- stats.py: the formulas (t-intervals, paired, Welch and Student t-tests, Holm-Bonferroni,
  detectable differences, outlier seeds, the A/A check);
- steps.py: the steps of cumulative variants (`after`): each against the one it builds on;
- text.py: the table as terminal text (`format_summary`, `report`);
- plotting.py: what every figure shares (canvas, colours, PNG files);
- figures.py: the report's PNG figures; heatmap.py: an experiment grid's heatmaps;
- render.py: the report files (`write_report`: report.md, report.html, CSVs, figures).

Nothing here trains or measures: every number comes from what the runs recorded.
This file imports nothing, so importing one module does not load the others.
"""
