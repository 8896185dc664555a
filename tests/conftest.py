"""Shared test set-up: quiet Hugging Face logging, fixed seeds, a few threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers), share the cores: torch's threads per worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // workers))


#: Test modules that take minutes, longest first: collected first, so that pytest-xdist's
#: workers (``--no-loadscope-reorder`` keeps this order) start them at once and finish together
#: (a long module left for last would run alone).
SLOW_FIRST = ("tests/test_student_edition.py", "tests/test_grading.py", "tests/test_labs.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, module in enumerate(SLOW_FIRST) if item.nodeid.startswith(module)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order is kept otherwise


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
