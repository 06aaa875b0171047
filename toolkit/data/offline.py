"""The Hugging Face datasets library in offline mode: nothing the toolkit reads through it may
reach the hub (or wait for it)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def offline_datasets() -> Any:
    """The datasets module, set never to download. Imported here first, it reads the offline
    switches from the environment; imported earlier by someone else, its loaders read the
    config flags set here at call time. Raises ImportError when datasets is not installed."""
    if "datasets" not in sys.modules:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    datasets = importlib.import_module("datasets")
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    return datasets
