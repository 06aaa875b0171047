"""Every variant x seed of a spec: jobs.py (a run as plain data an executor trains), runner.py
(skip, resume, train, tabulate), preflight.py (the checks and data preparation before anything
trains), reruns.py (what a rerun does with earlier runs),
verify.py (is a finished run intact), display.py (progress), results.py (the tidy results
table).
"""
