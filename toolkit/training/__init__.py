"""One training run: loop.py (set-up, steps, evaluation), state.py (the run's state and clock),
record.py (env.json, the test score, summary.json), optimizer.py (the optimizer and the
learning-rate schedule), step.py (the differentiated step and evaluation), budget.py (how long
a run trains), resume.py (resuming exactly), distributed.py (one run over torchrun's
processes), throughput.py (FLOPs, peak, MFU, speed switches).
"""
