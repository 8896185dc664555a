"""Domain adaptation: continued pre-training on a second domain, forgetting, and mixing old data back in.

A model pre-trained on one domain (the course's ``prose`` model: English from
Python's documentation) keeps training, with the same next-token objective,
on a second domain (Python source code from the standard library). This
module holds the pieces of that experiment:

* :data:`CODE_MODULES` and :func:`code_corpus`: the second domain, a fixed,
  sorted selection of standard-library source files read from the running
  interpreter (``sysconfig.get_paths()["stdlib"]``), split into train and
  validation **by file** (:func:`split_by_file`), so that no file gives text
  to both splits;
* :func:`strip_docstrings`: the code is stripped of its docstrings, because
  docstrings of the standard library are what the prose corpus is made of
  (:mod:`course_utils.data.prose`); comments are kept, since they belong to
  how code is written and are not in the prose corpus;
* :func:`mixed_batch`: training windows drawn from the new domain, each
  replaced, with probability ``old_share``, by a window of the old domain
  (replay of old data; the mixed-data recipe of BloombergGPT, Wu et al.
  2023, which trained on about half financial and half general text);
* :func:`continued_pretraining`: one run of :func:`course_utils.training.train`
  that saves a checkpoint every ``eval_every`` steps and scores each one on
  every domain's validation batches, giving perplexity on both domains
  across training (:func:`plot_domain_curves`).

References: Gururangan et al. 2020, "Don't Stop Pretraining: Adapt Language
Models to Domains and Tasks" (continued, domain-adaptive pre-training);
Wu et al. 2023, "BloombergGPT: A Large Language Model for Finance" (a mixed
dataset); Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually
Pre-train Large Language Models" (re-warming the learning rate and replaying
old data); McCloskey and Cohen 1989 (catastrophic interference, i.e. forgetting).

The standard library differs between Python versions (files are added,
removed and edited), so the code corpus, and every number measured on it,
depends on the interpreter that runs it.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .checks import check_int, check_number, check_one_of
from .data import random_batch
from .training import Batches, History, TrainConfig, evaluate, load_checkpoint, train

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["CODE_MODULES", "stdlib_root", "strip_docstrings", "split_by_file", "code_corpus", "mixed_batch",
           "continued_pretraining", "plot_domain_curves"]

# Pure-Python standard-library modules that are mostly code (not data tables),
# present as these files in CPython 3.11 to 3.13, and none of them among the
# files whose docstrings make up the prose corpus (course_utils.data.prose._DOC_MODULES).
# Paths relative to the stdlib folder, without ".py"; a missing file is skipped.
CODE_MODULES: tuple[str, ...] = tuple(sorted("""
    asyncio/events asyncio/futures asyncio/locks asyncio/queues asyncio/selector_events asyncio/streams
    asyncio/tasks compileall concurrent/futures/process concurrent/futures/thread csv dis filecmp fnmatch
    gettext glob importlib/_bootstrap linecache modulefinder multiprocessing/connection multiprocessing/pool
    netrc ntpath plistlib posixpath pprint profile pstats quopri reprlib selectors shlex string tabnanny
    tokenize trace tracemalloc types warnings wave webbrowser zipimport
""".split()))


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder, e.g. ``/usr/lib/python3.11``."""
    return Path(sysconfig.get_paths()["stdlib"])


# ----------------------------------------------------------------------------- the code domain


def _docstring_nodes(tree: ast.Module) -> list[tuple[ast.Expr, bool]]:
    """Each docstring statement of a module, class or function, and whether it is alone in its body."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.append((first, len(node.body) == 1))
    return found


def strip_docstrings(source: str) -> str:
    """``source`` without its docstrings (module, class and function); comments and all other code kept.

    A docstring on lines of its own is removed with those lines; one that
    shares a line with other code, or is the only statement of its body, is
    replaced by ``pass``, so the result is still valid Python with the same
    code. Example: ``'def f():\\n    \"\"\"Doc.\"\"\"\\n    return 1  # one\\n'`` ->
    ``'def f():\\n    return 1  # one\\n'``. Raises ``SyntaxError`` if
    ``source`` is not valid Python.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    tree = ast.parse(source)
    lines = source.encode("utf-8").splitlines(keepends=True)  # ast's column offsets count UTF-8 bytes
    for doc, alone in sorted(_docstring_nodes(tree), key=lambda d: d[0].lineno, reverse=True):
        first, last = doc.lineno - 1, doc.end_lineno - 1
        before, after = lines[first][:doc.col_offset], lines[last][doc.end_col_offset:]
        own_lines = not before.strip() and (not after.strip() or after.strip().startswith(b"#"))
        if own_lines:  # the usual case: drop the lines (and a comment after the closing quotes)
            ending = b"\n" if lines[last].endswith(b"\n") else b""
            lines[first:last + 1] = [before + b"pass" + ending] if alone else []
        else:  # `def f(): "Doc."` or `"Doc."; x = 1`: the string alone becomes `pass`
            lines[first:last + 1] = [before + b"pass" + after]
    return b"".join(lines).decode("utf-8")


def split_by_file(names: Sequence[str], validation_fraction: float = 0.2) -> dict[str, list[str]]:
    """Split file names into ``{"train": [...], "validation": [...]}``, both sorted, no name in both.

    The validation files are the ``round(len(names) * validation_fraction)``
    names (at least 1) with the smallest SHA-256 of the name: fixed on every
    machine and Python, and a file keeps its side when other files are added
    or removed. Example: ``split_by_file(["a", "b", "c", "d", "e"], 0.2)`` ->
    ``{"train": ["a", "b", "c", "e"], "validation": ["d"]}``.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a sequence of file names, got {type(names).__name__}")
    if not all(isinstance(n, str) for n in names):
        raise TypeError("names must hold only str file names")
    if len(set(names)) != len(names):
        raise ValueError("names must not repeat a file name")
    if len(names) < 2:
        raise ValueError(f"names must hold at least 2 files (one per split), got {len(names)}")
    check_number("validation_fraction", validation_fraction, 0, 1, low_open=True, high_open=True)
    n_val = min(len(names) - 1, max(1, round(len(names) * validation_fraction)))
    by_hash = sorted(names, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())
    validation = set(by_hash[:n_val])
    return {"train": sorted(n for n in names if n not in validation), "validation": sorted(validation)}


def code_corpus(split: str | None = None, validation_fraction: float = 0.2, modules: Sequence[str] = CODE_MODULES,
                root: str | Path | None = None, docstrings: bool = False
                ) -> dict[str, list[tuple[str, str]]] | list[tuple[str, str]]:
    """Python source files of the standard library: ``(module, text)`` pairs, split by file.

    ``modules`` are paths under ``root`` (default :func:`stdlib_root`) without
    ``.py``, read in sorted order; a missing file is skipped. Each text is the
    file's source with its docstrings removed (:func:`strip_docstrings`)
    unless ``docstrings=True``. The split is :func:`split_by_file`.
    ``split=None`` returns ``{"train": [...], "validation": [...]}``;
    ``"train"`` or ``"validation"`` returns that list.
    """
    if split is not None:
        check_one_of("split", split, ("train", "validation"))
    if isinstance(modules, str) or not isinstance(modules, Sequence):
        raise TypeError(f"modules must be a sequence of module paths, got {type(modules).__name__}")
    folder = stdlib_root() if root is None else Path(root)
    if not folder.is_dir():
        raise ValueError(f"root must be a folder, got {str(folder)!r}")
    present = sorted(m for m in set(modules) if (folder / f"{m}.py").is_file())
    if len(present) < 2:
        raise ValueError(f"at least 2 of the modules must exist under {folder} (as <module>.py), found {len(present)}")
    parts = split_by_file(present, validation_fraction)
    read = lambda m: (folder / f"{m}.py").read_text(encoding="utf-8")
    out = {name: [(m, read(m) if docstrings else strip_docstrings(read(m))) for m in files]
           for name, files in parts.items()}
    return out if split is None else out[split]


# ----------------------------------------------------------------------------- mixing old data back in


def mixed_batch(new: Sequence[int] | torch.Tensor, old: Sequence[int] | torch.Tensor, old_share: float,
                block_size: int, batch_size: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Random windows of the new domain, each one replaced by a window of the old domain with probability ``old_share``.

    Returns ``{"input_ids": (B, T), "labels": (B, T)}`` as
    :func:`course_utils.data.random_batch` does. Each row is drawn from
    ``old`` independently with probability ``old_share`` (0: new data only, 1:
    old data only), so over many batches a share ``old_share`` of the rows,
    and of the tokens, is old data. Example: with ``old_share=0.25`` and
    ``batch_size=8`` a batch holds 2 old rows on average.
    """
    check_number("old_share", old_share, 0, 1)
    new_rows = random_batch(new, block_size, batch_size, generator=generator)["input_ids"]  # (B, T)
    old_rows = random_batch(old, block_size, batch_size, generator=generator)["input_ids"]  # (B, T)
    from_old = torch.rand(batch_size, generator=generator) < old_share  # (B,)
    x = torch.where(from_old[:, None].to(new_rows.device), old_rows.to(new_rows.device), new_rows)  # (B, T)
    x = x.to(device if device is not None else x.device)
    return {"input_ids": x, "labels": x.clone()}


# ----------------------------------------------------------------------------- training and scoring


def _check_eval_sets(eval_sets: Any) -> None:
    if not isinstance(eval_sets, Mapping) or not eval_sets:
        raise TypeError("eval_sets must be a non-empty dict {domain name: list of batch dicts}")
    for name, batches in eval_sets.items():
        if not isinstance(name, str) or name == "step":
            raise ValueError(f"eval_sets keys must be domain names (str, not 'step'), got {name!r}")
        if not isinstance(batches, (list, tuple)) or not batches:
            raise TypeError(f"eval_sets[{name!r}] must be a non-empty list of batch dicts, got "
                            f"{type(batches).__name__}")


def continued_pretraining(model: nn.Module, train_batches: Batches, config: TrainConfig,
                          eval_sets: Mapping[str, Sequence[Mapping[str, torch.Tensor]]],
                          eval_every: int) -> tuple[dict[str, list], History]:
    """Train ``model`` in place with :func:`course_utils.training.train` and score it on every domain along the way.

    ``eval_sets`` maps a domain name to a fixed list of batch dicts (e.g.
    ``{"code": [...], "prose": [...]}``, each batch ``{"input_ids": (B, T),
    "labels": (B, T)}``). The model is scored before training (step 0) and at
    every checkpoint that ``train`` saves, every ``eval_every`` steps and after
    the last (``config``'s own ``checkpoint_dir`` and ``checkpoint_every`` are
    replaced by a temporary folder and ``eval_every``). Scoring happens after
    training, from the checkpoints, so it does not change the run; it runs
    under ``torch.inference_mode()``, which gives the same losses as
    :func:`course_utils.training.evaluate` alone without building a graph.

    Returns ``(curves, history)``: ``curves`` is ``{"step": [0, ...], domain:
    [perplexity at each step], ...}`` (perplexity = exp of the mean loss over
    that domain's batches, :func:`course_utils.training.evaluate`), and
    ``history`` is what ``train`` returned. The model ends with its weights
    after the last step.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_eval_sets(eval_sets)
    check_int("eval_every", eval_every, minimum=1)

    def score(curves: dict[str, list], step: int) -> None:
        curves["step"].append(step)
        with torch.inference_mode():  # no autograd graph: about half the time on a CPU, the same losses
            for name, batches in eval_sets.items():
                curves[name].append(evaluate(model, batches, use_amp=config.use_amp)[1])

    curves: dict[str, list] = {"step": [], **{name: [] for name in eval_sets}}
    score(curves, 0)
    with tempfile.TemporaryDirectory(prefix="continued_pretraining_") as folder:
        history = train(model, train_batches, replace(config, checkpoint_dir=folder, checkpoint_every=eval_every))
        for path in sorted(Path(folder).glob("step_*")):  # step_000010, step_000020, ...: in step order
            info = load_checkpoint(path, model)
            score(curves, info["step"])
    return curves, history


def plot_domain_curves(runs: Mapping[str, Mapping[str, Sequence[float]]], domains: Sequence[str] | None = None,
                       title: str | None = None) -> "Figure":
    """Perplexity on each domain across training: one panel per domain, one line per run.

    ``runs`` maps a run's label (e.g. ``"0 % old data"``) to the ``curves``
    that :func:`continued_pretraining` returned; ``domains`` (default: every
    domain of the first run) picks and orders the panels. The step-0 value is
    the model before continued pre-training, marked with a dotted line. A
    panel whose values span more than a factor of 5 has a log scale.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("runs must be a non-empty dict {label: curves from continued_pretraining}")
    first = next(iter(runs.values()))
    domains = [d for d in first if d != "step"] if domains is None else list(domains)
    for label, curves in runs.items():
        missing = [d for d in ["step", *domains] if d not in curves]
        if missing:
            raise ValueError(f"runs[{label!r}] has no curve for {missing}")
        if any(len(curves[d]) != len(curves["step"]) for d in domains):
            raise ValueError(f"runs[{label!r}]: every curve must have one value per step")
    fig = Figure(figsize=(4.2 * len(domains), 3.4), layout="constrained")
    axes = fig.subplots(1, len(domains), squeeze=False)[0]
    for ax, domain in zip(axes, domains):
        for label, curves in runs.items():
            ax.plot(curves["step"], curves[domain], marker="o", markersize=3, label=label)
        ax.axhline(first[domain][0], color="gray", linestyle=":", label="before")
        values = [v for curves in runs.values() for v in curves[domain]]
        if max(values) > 5 * min(values):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 100, not 10^2
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xlabel("continued pre-training step")
        ax.set_ylabel("validation perplexity")
        ax.set_title(domain)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig
