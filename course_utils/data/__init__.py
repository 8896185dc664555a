"""Offline corpora, synthetic tasks, batching and collators.

Everything here works without a network connection. Corpora come back as
Hugging Face ``datasets.Dataset`` objects (``datasets`` is imported inside the
functions); batches come back as dicts of tensors with Hugging Face names, so
``model(**batch)`` works. Every public name is importable from here
(``from course_utils.data import load_prose``); each lives in one module,
imported on first use, so ``import course_utils.data`` is instant:

==================  ==========================================================
module              what it holds
==================  ==========================================================
``prose``           English paragraphs of Python's own documentation (the
                    language reference in ``pydoc_data.topics`` plus
                    standard-library docstrings), frozen in the package from
                    CPython 3.11.7 so every machine gets the same corpus, for
                    training tokenizers and small language models
                    (``python -m course_utils.data.prose --freeze`` re-makes it)
``prose_cleaning``  reST-like text to clean paragraphs (used to build ``prose``)
``facts``           a world of facts: real moons and planets, real cities and
                    countries, fictional people; sentences, question/answer
                    pairs and NER tags about them
``tasks``           synthetic tasks: associative recall (Ba et al. 2016, "Using
                    Fast Weights to Attend to the Recent Past"; Arora et al.
                    2023, "Zoology"), copying, in-context learning as task
                    identification (Xie et al. 2022, "An Explanation of
                    In-context Learning as Implicit Bayesian Inference") and a
                    toy translation task with reordering
``batching``        fixed-size blocks and random windows of a token stream (as
                    in nanoGPT's ``get_batch``), and three collators: causal LM
                    padding, BERT masking (Devlin et al. 2019, section 3.1) and
                    T5 span corruption (Raffel et al. 2020, section 3.1.4; the
                    ``random_spans_noise_mask`` algorithm of the T5 code base)
``hub``             ``load_hub_dataset`` fails at once, with advice, when offline
==================  ==========================================================

Label convention (Hugging Face): ``labels`` are aligned with ``input_ids``;
the model shifts them internally and ignores positions set to ``-100``.
"""

from __future__ import annotations

import importlib
from typing import Any


# Which module defines each public name, in the order of ``__all__``.
_HOME = {
    "prose": ["load_prose", "prose_text"],
    "facts": ["Fact", "facts_world", "facts_corpus", "facts_questions", "ner_dataset", "NER_LABELS"],
    "tasks": ["associative_recall", "copy_task", "ICL_TASKS", "ICLTokenizer", "icl_tasks", "icl_eval_sets",
              "translate", "translation_pairs"],
    "batching": ["causal_lm_blocks", "random_batch", "CausalLMCollator", "MaskedLMCollator",
                 "random_spans_noise_mask", "span_corrupt", "SpanCorruptionCollator"],
    "hub": ["load_hub_dataset"],
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = [name for names in _HOME.values() for name in names]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use: ``course_utils.data.load_prose`` loads ``.prose``."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
