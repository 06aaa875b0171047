"""One training run: loop.py (set-up, steps, evaluation, summary), optimizer.py (AdamW and the
learning-rate schedule), resume.py (resuming exactly), distributed.py (one run over torchrun's
processes), throughput.py (FLOPs, peak, MFU, speed switches).
"""
