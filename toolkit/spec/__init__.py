"""Experiment specs as data: schema.py (every key, type and default), parse.py (TOML, --set,
variants x seeds), validate.py (every value checked before training).
"""
