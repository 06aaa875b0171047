"""Experiment specs as data: schema.py (every key, type and default), parse.py (TOML, --set,
variants x seeds), chains.py (variants that build on one another: `after`), validate.py (every
value checked before training).
"""
