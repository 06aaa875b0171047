"""Every variant x seed of a spec: jobs.py (a run as plain data an executor trains), runner.py
(prepare, skip, resume, train, tabulate), display.py (progress), results.py (the tidy results
table).
"""
