"""The plugin contract: hookspecs (the hooks), contracts (the kinds' Protocols), registry (kind ->
name -> factory) and manager (loads plugins and fills a registry). Imports nothing of the engine
above it.
"""
