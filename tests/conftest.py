"""Shared test set-up: quiet Hugging Face logging, fixed seeds, a few threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    try:
        from transformers.utils import logging
    except ImportError:  # pragma: no cover
        return
    logging.set_verbosity_error()
