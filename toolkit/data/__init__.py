"""Text to token ids to batches: tokens.py (the content-keyed token cache), batches.py (training
and evaluation windows), resolve.py (a run's corpus and tokenizer).
"""
