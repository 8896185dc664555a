"""The Hugging Face Hub, optional: :func:`load_hub_dataset` fails at once, with advice, when offline."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

__all__ = ["load_hub_dataset"]


_OFFLINE_ADVICE = ("Work offline with the corpora of course_utils.data (load_prose, facts_corpus, "
                   "associative_recall, ...), or with local files: datasets.load_dataset('text', "
                   "data_files='my.txt') needs no network.")


def _hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(path: str, *args: Any, connect_timeout: float = 2.0, **kwargs: Any) -> Any:
    """``datasets.load_dataset(path, *args, **kwargs)``, but fail at once when offline.

    Raises ``ConnectionError`` without waiting when ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE`` is set, or when the Hub host (``HF_ENDPOINT``,
    default ``huggingface.co``) does not accept a connection within ``connect_timeout`` seconds.
    Local files need no Hub: call ``datasets.load_dataset("text", data_files=...)`` directly.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise ConnectionError(f"cannot load {path!r} from the Hugging Face Hub: {var} is set. "
                                  + _OFFLINE_ADVICE)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    match = re.match(r"^(?:(https?)://)?([^/:]+)(?::(\d+))?", endpoint)
    host = match.group(2) if match else "huggingface.co"
    port = int(match.group(3)) if match and match.group(3) else (80 if match and match.group(1) == "http" else 443)
    if not _hub_reachable(host, port, connect_timeout):
        raise ConnectionError(f"cannot load {path!r}: the Hugging Face Hub ({host}:{port}) is not reachable "
                              f"within {connect_timeout} s. " + _OFFLINE_ADVICE)
    from datasets import load_dataset

    return load_dataset(path, *args, **kwargs)
