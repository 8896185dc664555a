"""course_utils: the code behind the course *Generative AI with Large Language Models*.

One module per concept, mirroring the chapters:

========================  ==============================================
module                    what it holds
========================  ==============================================
``device``                device choice, autocast dtype, seeding
``rnn``                   n-grams, RNN/LSTM language models, recall
``attention``             scaled dot-product and multi-head attention
``transformer``           encoder-only, decoder-only and encoder-decoder
``training``              one training loop for all three models
``token_classification``  an encoder that tags tokens: NER and its F1
``tokenization``          character, word and byte-level BPE tokenizers
``data``                  offline corpora, batching and collators
``sampling``              temperature, top-k and top-p
``curation``              pre-training data filters and deduplication
``domain_adaptation``     continued pre-training on a new domain, mixing
``memory``                GPU memory for inference and training
``quantization``          number formats and int8 quantization
``scaling``               compute (6ND), loss laws, compute-optimal sizes
``plotting``              the figures of the book
``notebook``              ``glue`` and ``show_source`` for the chapters
``checks``                argument checks shared by every module
========================  ==============================================

Submodules are imported lazily (``course_utils.attention`` is loaded on first
use), so ``import course_utils`` is instant and pulls in neither torch nor
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_SUBMODULES = {
    "attention",
    "checks",
    "curation",
    "data",
    "device",
    "domain_adaptation",
    "memory",
    "notebook",
    "plotting",
    "pretrain",
    "pretrained",
    "quantization",
    "rnn",
    "sampling",
    "scaling",
    "token_classification",
    "tokenization",
    "training",
    "transformer",
}

__all__ = sorted(_SUBMODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
