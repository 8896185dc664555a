"""One training loop for every model in the course.

The loop follows nanoGPT's ``train.py`` (Karpathy, 2022), written as functions:

* AdamW (Loshchilov & Hutter, 2019) with weight decay on the matrices only
  (:func:`configure_optimizer`);
* a linear warmup, then a cosine decay of the learning rate to a floor
  (Loshchilov & Hutter, 2017; :func:`lr_at`);
* gradient accumulation, gradient clipping and bf16 autocast on CUDA GPUs;
* periodic evaluation (:func:`evaluate`) and checkpoints in safetensors
  (:func:`save_checkpoint`, :func:`load_checkpoint`) from which a run resumes
  exactly where it stopped;
* the same code under ``torchrun``: several processes, each with its own data,
  kept in sync by ``DistributedDataParallel`` (PyTorch's DDP tutorial), or
  with the model, gradients and optimizer states sharded across them by FSDP
  (``TrainConfig(parallel="fsdp")``, :mod:`course_utils.distributed`); a
  checkpoint holds the full weights either way, so a run saved by N processes
  resumes on M.

Any ``nn.Module`` whose ``forward(**batch)`` returns ``(logits, loss)`` can be
trained (the three transformers of :mod:`course_utils.transformer`, the RNN
baseline); so can a Hugging Face model, whose output carries ``.loss``.

Batches are dicts such as ``{"input_ids": (B, T), "labels": (B, T)}``. They
come either from a callable ``get_batch(split)`` (nanoGPT style, random
windows: see :func:`course_utils.data.random_batch`) or from any iterable of
dicts (a list, a ``DataLoader``). A callable that has a ``generator``
parameter is handed a ``torch.Generator`` seeded from ``TrainConfig.seed``:
the data order is then fixed by the seed alone and saved in checkpoints.

Why one file of this size: the course promises one training loop for every
model, and the optimizer, schedule, evaluation, checkpoints and multi-process
set-up it uses are only meaningful next to that loop.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm.auto import tqdm

from .checks import check_bool, check_int, check_number, check_one_of
from .device import autocast_dtype, evaluating, get_device, seed_everything, training_mode

__all__ = [
    "TrainConfig",
    "History",
    "configure_optimizer",
    "lr_at",
    "evaluate",
    "train",
    "save_checkpoint",
    "load_checkpoint",
]

#: How ``train`` spreads a ``torchrun`` job over its processes (``TrainConfig.parallel``).
PARALLEL = ("ddp", "fsdp")

Batch = Mapping[str, Any]
Batches = Callable[..., Batch] | Iterable[Batch]


# ----------------------------------------------------------------------------- checks


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {type(betas).__name__}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(check_number(f"betas[{i}]", b, 0, 1, high_open=True) for i, b in enumerate(betas))


# ----------------------------------------------------------------------------- configuration and history


@dataclass
class TrainConfig:
    """Settings of one training run. Steps count optimizer updates."""

    max_steps: int = 1000  # optimizer updates in the whole run (the schedule's length)
    max_seconds: float | None = None  # also stop once training has run this long (wall clock); None = no limit
    lr: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio (nanoGPT: 0.1)
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decay rates (GPT-3 used 0.9, 0.95)
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = no clipping
    grad_accum_steps: int = 1  # micro-batches per update: effective batch = B * grad_accum_steps * processes
    eval_every: int = 100  # evaluate on val_batches every this many steps (and after the last)
    eval_batches: int = 20  # batches per evaluation (at most)
    log_every: int = 10  # record train loss, lr, tokens and time every this many steps (and after the last)
    checkpoint_dir: str | None = None  # where checkpoints go (checkpoint_dir/step_000500/); None = none
    checkpoint_every: int = 0  # save every this many steps; 0 = only after the last step
    seed: int = 1337  # seeds torch (dropout) and the data generator; process r uses seed + r
    device: str | torch.device | None = None  # "cpu", "cuda", "mps"; None = the best (device.get_device)
    use_amp: bool = True  # bf16 autocast on CUDA GPUs that support it; ignored elsewhere
    progress: bool = True  # show a tqdm progress bar
    desc: str = "train"  # the progress bar's label
    parallel: str = "ddp"  # under torchrun: "ddp" (every process holds the whole model) or "fsdp" (sharded)

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum_steps", "eval_every", "eval_batches", "log_every"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "checkpoint_every"):
            check_int(name, getattr(self, name), minimum=0)
        check_int("warmup_steps", self.warmup_steps, maximum=self.max_steps, hint="max_steps")
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, low=0, low_open=True, hint="or None for no time limit")
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("grad_clip", self.grad_clip, low=0)
        self.betas = _check_betas(self.betas)
        check_int("seed", self.seed)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be None or a path, got {self.checkpoint_dir!r}")
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be None, a str or a torch.device, got {self.device!r}")
        check_bool("use_amp", self.use_amp)
        check_bool("progress", self.progress)
        if not isinstance(self.desc, str):
            raise TypeError(f"desc must be a str, got {type(self.desc).__name__}")
        check_one_of("parallel", self.parallel, PARALLEL)

    @property
    def min_lr(self) -> float:
        return self.lr * self.min_lr_ratio

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths and devices as strings)."""
        d = asdict(self)
        for name in ("checkpoint_dir", "device"):
            d[name] = None if d[name] is None else str(d[name])
        return d


@dataclass
class History:
    """What happened during training, one list entry per record.

    ``step`` counts optimizer updates done; ``train_loss`` is the mean loss of
    the steps since the previous record; ``tokens`` counts ``input_ids`` tokens
    seen by all processes; ``time`` is wall-clock seconds since training began.
    Validation is recorded separately at ``val_step``; ``val_ppl = exp(val_loss)``.
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_ppl: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """Every column as a list, e.g. for :func:`course_utils.plotting.plot_training_curves`."""
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> "History":
        known = {f.name for f in fields(cls)}
        return cls(**{k: list(v) for k, v in d.items() if k in known})

    def plot(self, **kwargs: Any):
        """Training and validation loss against the step; returns a matplotlib figure."""
        from .plotting import plot_training_curves

        return plot_training_curves(self.as_dict(), **kwargs)


# ----------------------------------------------------------------------------- optimizer and schedule


def configure_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    device: torch.device | str | None = None,
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: decay for every parameter with
    ``dim >= 2`` (the weight matrices and, as in nanoGPT, the embedding
    tables), none for biases and LayerNorm gains (``dim == 1``).

    Decay pulls weights towards 0; that regularises a matrix, but a bias or a
    LayerNorm gain pulled to 0 only hurts. A tied weight (GPT's ``lm_head`` is
    ``wte``) is one parameter and appears once. ``device`` (default: where the
    parameters are) selects PyTorch's fused AdamW kernel on CUDA.

    Example: a ``Linear(4, 3)`` gives groups of sizes ``[1, 1]``: the ``(3, 4)``
    weight decays, the ``(3,)`` bias does not.
    """
    check_number("lr", lr, low=0, low_open=True)
    check_number("weight_decay", weight_decay, low=0)
    betas = _check_betas(betas)
    params = [p for p in model.parameters() if p.requires_grad]  # each shared parameter once
    if not params:
        raise ValueError(f"model must have trainable parameters, got none in {type(model).__name__}")
    device = torch.device(device) if device is not None else params[0].device
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda" or None)


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate of update ``step`` (counted from 0).

    Linear warmup ``max_lr * (step + 1) / warmup_steps`` for the first
    ``warmup_steps`` updates, then a cosine from ``max_lr`` down to ``min_lr``
    at ``step = max_steps``, and ``min_lr`` after that::

        lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * (step - warmup_steps) / (max_steps - warmup_steps))) / 2

    Worked example with ``max_lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110``:
    step 0 -> 1e-4, step 4 -> 5e-4, steps 9 and 10 -> 1e-3, step 60 (half way) ->
    1e-4 + 9e-4 / 2 = 5.5e-4, step 110 and later -> 1e-4.
    """
    check_int("step", step, minimum=0)
    check_int("warmup_steps", warmup_steps, minimum=0)
    check_int("max_steps", max_steps, minimum=1)
    check_number("max_lr", max_lr, low=0, low_open=True)
    check_number("min_lr", min_lr, 0, max_lr)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- batches


def _takes_generator(fn: Callable) -> bool:
    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


class _BatchStream:
    """Endless batch dicts from a ``get_batch(split)`` callable or an iterable.

    An iterable is read epoch after epoch as one global stream of batches, of
    which process ``rank`` of ``world`` takes every ``world``-th one (batch
    ``g`` goes to process ``g % world``). ``position`` counts the batches this
    process drew; ``consumed`` is the global stream's position (every process
    draws as many), so a run resumed on any number of processes continues the
    stream where it was.
    """

    def __init__(self, source: Batches, split: str, seed: int, rank: int = 0, world: int = 1, name: str = "batches"):
        self.source, self.split, self.rank, self.world, self.name = source, split, rank, world, name
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0
        self._start = 0  # global batches consumed before this stream began (a resumed run)
        self._iterator: Iterator[Batch] | None = None
        if callable(source):
            self._pass_generator = _takes_generator(source)
        elif not isinstance(source, Iterable):
            raise TypeError(f"{name} must be a get_batch(split) callable or an iterable of dicts, "
                            f"got {type(source).__name__}")

    @property
    def consumed(self) -> int:
        return self._start + self.position * self.world

    def __iter__(self) -> "_BatchStream":
        return self

    def __next__(self) -> Batch:
        if callable(self.source):
            kwargs = {"generator": self.generator} if self._pass_generator else {}
            batch = self.source(self.split, **kwargs)
        else:
            if self._iterator is None:
                self._iterator = itertools.islice(self._epochs(), self._start + self.rank, None, self.world)
            batch = next(self._iterator)
        if not isinstance(batch, Mapping):
            raise TypeError(f"{self.name} must yield dicts of tensors (model(**batch)), got {type(batch).__name__}")
        self.position += 1
        return batch

    def _epochs(self) -> Iterator[Batch]:
        """The iterable's batches, epoch after epoch."""
        while True:
            n = 0
            for n, batch in enumerate(self.source, start=1):  # noqa: B007 - n counts the epoch's batches
                yield batch
            if n == 0:
                raise ValueError(f"{self.name} ran out after {self.position} batches; pass a list, a DataLoader "
                                 f"or a get_batch callable, which can be read more than once")

    def resume(self, consumed: int) -> None:
        """Continue an iterable's global stream after ``consumed`` batches."""
        self._start, self.position, self._iterator = consumed, 0, None

def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _loss_of(output: Any) -> torch.Tensor:
    """The loss from ``(logits, loss)``, or from a Hugging Face output's ``.loss``."""
    loss = output.loss if hasattr(output, "loss") else output[1]
    if loss is None:
        raise ValueError("the model returned loss=None: each batch must hold labels")
    return loss


def _autocast(device: torch.device, use_amp: bool):
    dtype = autocast_dtype(device)
    if use_amp and device.type == "cuda" and dtype != torch.float32:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return nullcontext()


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    seed: int = 0,
    use_amp: bool = False,
) -> tuple[float, float]:
    """Mean loss over ``batches`` and its perplexity ``exp(loss)``.

    ``batches`` is an iterable of batch dicts (all of it, or the first
    ``max_batches``), or a ``get_batch(split)`` callable, which is asked for
    ``max_batches`` batches of split ``"val"``, drawn with ``seed`` so that
    every call scores the same batches (a callable without a ``generator``
    parameter draws from torch's global generator, which is seeded and then
    restored). The mean is over batches, each batch's loss being its own mean
    over tokens. ``device`` defaults to where the model's parameters are.
    The model is put in eval mode and back to its previous mode afterwards.
    """
    if max_batches is not None:
        check_int("max_batches", max_batches, minimum=1)
    if callable(batches) and max_batches is None:
        raise ValueError("max_batches must be given when batches is a get_batch callable, got None")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    losses = []  # one 0-d tensor per batch, left on the device: no synchronisation per batch
    # no_grad: nothing here needs a graph (and half the time goes into building one);
    # fork_rng: leave the training run's random numbers untouched
    with evaluating(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        stream = _BatchStream(batches, "val", seed, name="val_batches") if callable(batches) else batches
        for batch in itertools.islice(stream, max_batches):
            if not isinstance(batch, Mapping):
                raise TypeError(f"batches must yield dicts of tensors, got {type(batch).__name__}")
            with _autocast(device, use_amp):
                losses.append(_loss_of(model(**_to_device(batch, device))).float())
    if not losses:
        raise ValueError("batches yielded no batch (a one-shot iterator is used up after one pass: "
                         "pass a list, a DataLoader or a get_batch callable)")
    loss = torch.stack(losses).cpu().double().mean().item()  # averaged in float64, on the CPU
    return loss, math.exp(loss)


# ----------------------------------------------------------------------------- checkpoints

# A checkpoint is a directory:
#   model.safetensors      the weights; tied weights are stored once (safetensors.torch.save_model)
#   optimizer.safetensors  the optimizer's tensors, with its settings as JSON in the file's metadata
#   checkpoint.json        step, model and training configs, history
#   rng_rank{r}.safetensors (written by train) process r's random-number states and data position
# Nothing is pickled, so loading a checkpoint cannot run code.


def _config_dict(model: nn.Module) -> dict | None:
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return asdict(config) if is_dataclass(config) else None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: TrainConfig | Mapping | None = None,
    history: History | None = None,
) -> Path:
    """Write a checkpoint directory at ``path`` (created if needed) and return it.

    The optimizer's ``state_dict`` is flattened: tensor ``state[i][name]`` is
    stored as ``"state.{i}.{name}"`` in ``optimizer.safetensors``; its
    ``param_groups`` (numbers and flags) go to the file's metadata as JSON.
    A model sharded by FSDP is gathered first, so the files are the same as a
    single process writes (every process must call this; process 0 writes).
    """
    from safetensors.torch import save_file, save_model

    check_int("step", step, minimum=0)
    path = Path(path)
    model = _unwrap(model)
    if _is_fsdp(model):  # gathered from every process (a collective: all of them call this); process 0 writes
        tensors, state = _gather_fsdp(model, optimizer)
        if dist.get_rank() != 0:
            return path
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / "model.safetensors"))
    else:
        path.mkdir(parents=True, exist_ok=True)
        save_model(model, str(path / "model.safetensors"))
        state = optimizer.state_dict() if optimizer is not None else None
    if optimizer is not None:
        tensors, extra = {}, {}
        for i, per_param in state["state"].items():
            for name, value in per_param.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"state.{i}.{name}"] = value.detach().cpu().contiguous()
                else:
                    extra.setdefault(str(i), {})[name] = value
        meta = {"param_groups": json.dumps(state["param_groups"]), "extra_state": json.dumps(extra)}
        save_file(tensors, str(path / "optimizer.safetensors"), metadata=meta)
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    info = {
        "step": step,
        "model_class": _model_class(model).__name__,
        "model_config": _config_dict(model),
        "train_config": None if config is None else dict(config),
        "history": (history or History()).as_dict(),
    }
    (path / "checkpoint.json").write_text(json.dumps(info, indent=2))
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load the weights at ``path`` into ``model`` (in place, so tied weights
    stay tied) and, if given, the optimizer state into ``optimizer``.

    Returns the contents of ``checkpoint.json``: ``step``, ``model_class``,
    ``model_config``, ``train_config`` and ``history`` (a dict of lists).
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    for name in ("model.safetensors", "checkpoint.json") + (("optimizer.safetensors",) if optimizer else ()):
        if not (path / name).is_file():
            raise ValueError(f"path must be a checkpoint directory holding {name}, got {str(path)!r}")
    model = _unwrap(model)
    device = next(model.parameters()).device
    if not _is_fsdp(model):
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        with safe_open(str(path / "optimizer.safetensors"), framework="pt") as f:
            meta = f.metadata()
            for key in f.keys():
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = f.get_tensor(key)
        for i, values in json.loads(meta["extra_state"]).items():
            state.setdefault(int(i), {}).update(values)
        groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
                  for g in json.loads(meta["param_groups"])]  # JSON turned tuples such as betas into lists
        if not _is_fsdp(model):
            optimizer.load_state_dict({"state": state, "param_groups": groups})
    if _is_fsdp(model):
        _scatter_fsdp(path, model, optimizer, {"state": state, "param_groups": groups} if optimizer else None)
    return json.loads((path / "checkpoint.json").read_text())


def _is_fsdp(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - a torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def _model_class(model: nn.Module) -> type:
    """The model's own class (``fully_shard`` swaps it for a subclass named ``FSDP<name>``)."""
    return type(model).__mro__[2] if _is_fsdp(model) else type(model)


def _fqn_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: position ``i`` is ``state[i]`` of its ``state_dict``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _gather_fsdp(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full weights (a tied weight once) and the optimizer's ``state_dict`` with
    integer keys, gathered from every shard to process 0's CPU."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    tensors = {k: v.contiguous() for k, v in full.items() if k not in tied}
    if optimizer is None:
        return tensors, None
    osd = get_optimizer_state_dict(model, optimizer, options=options)
    index = {fqn: i for i, fqn in enumerate(_fqn_order(model, optimizer))}
    state = {index[fqn]: values for fqn, values in osd.get("state", {}).items()}
    groups = [{**g, "params": [index[fqn] for fqn in g["params"]]} for g in osd.get("param_groups", [])]
    return tensors, {"state": state, "param_groups": groups}


def _scatter_fsdp(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, osd: dict | None) -> None:
    """Load full weights (and optimizer state with integer keys) into a model
    sharded by FSDP: every process reads the files and keeps its own shards."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    full = load_file(str(path / "model.safetensors"))
    shared: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    for names in shared.values():  # a tied weight was stored once: give it all its names back
        stored = next((n for n in names if n in full), None)
        for n in names:
            if stored is not None:
                full.setdefault(n, full[stored])
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, full, options=options)
    if optimizer is not None and osd is not None:
        fqns = _fqn_order(model, optimizer)
        named = {"state": {fqns[i]: values for i, values in osd["state"].items()},
                 "param_groups": [{**g, "params": [fqns[i] for i in g["params"]]} for g in osd["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, named, options=options)


def _save_rng(path: Path, rank: int, data: _BatchStream, device: torch.device) -> None:
    """Process ``rank``'s random-number states and data position, for an exact resume."""
    from safetensors.torch import save_file

    tensors = {"torch": torch.get_rng_state(), "data": data.generator.get_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    save_file(tensors, str(path / f"rng_rank{rank}.safetensors"), metadata={"consumed": str(data.consumed)})


def _load_rng(path: Path, rank: int, data: _BatchStream, device: torch.device) -> None:
    """Restore what :func:`_save_rng` saved. A process that was not in the saved
    run (more processes now) keeps fresh random numbers, but an iterable still
    continues the global stream of batches where the saved run left it."""
    from safetensors import safe_open

    own = path / f"rng_rank{rank}.safetensors"
    file = own if own.is_file() else path / "rng_rank0.safetensors"
    if not file.is_file():
        return
    with safe_open(str(file), framework="pt") as f:
        states = {key: f.get_tensor(key) for key in f.keys()}
        consumed = int(f.metadata()["consumed"])
    if not callable(data.source):
        data.resume(consumed)
    if file != own:
        return
    torch.set_rng_state(states["torch"])
    data.generator.set_state(states["data"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


# ----------------------------------------------------------------------------- distributed


def _setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``. Under ``torchrun`` (RANK and WORLD_SIZE
    set) the first call starts the process group, NCCL on GPUs and Gloo on
    CPUs, and keeps it for later calls until the process exits (starting a
    group again in the same process can hang while it connects)."""
    device = get_device(config.device)
    if not (dist.is_available() and dist.is_initialized()):
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return 0, 1, device
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return dist.get_rank(), dist.get_world_size(), device


# ----------------------------------------------------------------------------- the loop


def _out_of_time(config: TrainConfig, elapsed: float, world: int, device: torch.device) -> bool:
    """Whether the time limit is reached; under DDP, as soon as it is for any
    process, so that all of them stop after the same step."""
    if config.max_seconds is None:
        return False
    over = elapsed >= config.max_seconds
    if world > 1:
        flag = torch.tensor(float(over), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        over = bool(flag.item())
    return over


def _progress_bar(config: TrainConfig, step: int, seconds: float, rank: int) -> tqdm:
    """A bar of optimizer steps, or of seconds when the run has a time limit
    (it may end before ``max_steps``); shown by process 0 only."""
    disable = not config.progress or rank != 0
    if config.max_seconds is None:
        return tqdm(total=config.max_steps, initial=step, desc=config.desc, disable=disable)
    return tqdm(total=config.max_seconds, initial=min(seconds, config.max_seconds), desc=config.desc, unit="s",
                disable=disable, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")


def train(
    model: nn.Module,
    train_batches: Batches,
    config: TrainConfig,
    val_batches: Batches | None = None,
    resume_from: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` in place for ``config.max_steps`` optimizer updates, or
    until ``config.max_seconds`` have passed if that comes first (the step that
    crosses the limit is the last, and is recorded, evaluated and saved as
    such). The time counts from the start of the loop, batch making included,
    and carries on across a resumed run.

    Each update: set the learning rate (:func:`lr_at`); for each of
    ``grad_accum_steps`` micro-batches, forward, ``loss / grad_accum_steps``,
    backward (gradients add up); clip the global gradient norm; step; zero the
    gradients. Every ``eval_every`` steps (and after the last) the mean loss and
    perplexity on ``eval_batches`` batches of ``val_batches`` are recorded
    (:func:`evaluate`; the same batches each time). Every ``checkpoint_every``
    steps (and after the last) a checkpoint goes to
    ``checkpoint_dir/step_{step:06d}``.

    ``train_batches`` / ``val_batches``: a ``get_batch(split)`` callable (called
    with ``"train"`` / ``"val"``; given ``generator=`` if it has that
    parameter) or an iterable of batch dicts, restarted when it runs out.
    ``resume_from``: a checkpoint directory; weights, optimizer, step, history,
    random numbers and data position are restored, so an interrupted run
    continues exactly as if it had not stopped.

    ``train`` seeds torch with ``config.seed`` (process ``r`` of a ``torchrun``
    job with ``seed + r``). Under ``torchrun`` the model is wrapped in
    ``DistributedDataParallel``, or with ``config.parallel="fsdp"`` sharded in
    place by FSDP2's ``fully_shard`` (:func:`course_utils.distributed.shard`;
    it stays sharded after the run; its checkpoints hold the full weights, so
    they resume on any number of processes). Either way every process starts
    from process 0's weights and draws its own batches (an
    iterable is dealt out round-robin, so do not also give a ``DataLoader`` a
    ``DistributedSampler``), gradients are averaged across processes
    once per update (``no_sync`` on the other micro-batches), and only process 0
    shows the progress bar and writes checkpoints. Its ``train_loss`` is its own.
    The model is in training mode during the run and back in its previous mode
    afterwards, also when the run fails.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    rank, world, device = _setup_distributed(config)
    seed_everything(config.seed + rank)
    model.to(device)
    fsdp = world > 1 and config.parallel == "fsdp"
    if fsdp:
        from .distributed import shard

        for tensor in model.state_dict().values():  # start from process 0's weights, as DDP does
            dist.broadcast(tensor, src=0)
        shard(model, "fsdp")
    optimizer = configure_optimizer(model, config.lr, config.weight_decay, config.betas, device)
    data = _BatchStream(train_batches, "train", config.seed + rank, rank, world, name="train_batches")
    history, start = History(), 0
    if resume_from is not None:
        info = load_checkpoint(resume_from, model, optimizer)
        history, start = History.from_dict(info["history"]), info["step"]
        _load_rng(Path(resume_from), rank, data, device)
    net = model
    if world > 1 and not fsdp:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  gradient_as_bucket_view=True)  # no second copy of the gradients
    accum = config.grad_accum_steps
    tokens = history.tokens[-1] if history.tokens else 0
    t0 = time.perf_counter() - (history.time[-1] if history.time else 0.0)
    window_loss, window_steps = torch.zeros((), device=device), 0  # train loss since the last record
    postfix: dict[str, str] = {}  # what the progress bar shows
    bar = _progress_bar(config, start, history.time[-1] if history.time else 0.0, rank)
    with training_mode(model), bar:
        for step in range(start, config.max_steps):
            lr = lr_at(step, config.lr, config.min_lr, config.warmup_steps, config.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(accum):
                batch = _to_device(next(data), device)
                tokens += batch["input_ids"].numel() * world if "input_ids" in batch else 0
                last = micro == accum - 1  # gradients are averaged across processes on this one only
                if fsdp:
                    model.set_requires_gradient_sync(last)
                with (net.no_sync() if world > 1 and not fsdp and not last else nullcontext()):
                    with _autocast(device, config.use_amp):
                        loss = _loss_of(net(**batch))
                    (loss / accum).backward()
                window_loss += loss.detach().float() / accum
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done, window_steps = step + 1, window_steps + 1
            elapsed = time.perf_counter() - t0
            final = done == config.max_steps or _out_of_time(config, elapsed, world, device)
            checkpoint_due = config.checkpoint_dir is not None and (
                final or (config.checkpoint_every > 0 and done % config.checkpoint_every == 0))

            if done % config.log_every == 0 or final or checkpoint_due:  # a checkpoint closes the loss window
                history.step.append(done)
                history.train_loss.append(window_loss.item() / window_steps)
                history.lr.append(lr)
                history.tokens.append(tokens)
                history.time.append(elapsed)
                window_loss.zero_()
                window_steps = 0
                postfix.update(loss=f"{history.train_loss[-1]:.4f}", lr=f"{lr:.2e}")
            if val_batches is not None and (done % config.eval_every == 0 or final):
                val_loss, val_ppl = evaluate(model, val_batches, device, config.eval_batches, config.seed,
                                             config.use_amp)
                history.val_step.append(done)
                history.val_loss.append(val_loss)
                history.val_ppl.append(val_ppl)
                postfix["val"] = f"{val_loss:.4f}"
            if checkpoint_due:
                path = Path(config.checkpoint_dir) / f"step_{done:06d}"
                if rank == 0 or fsdp:  # FSDP gathers the shards: every process takes part
                    save_checkpoint(path, model, optimizer, done, config, history)
                path.mkdir(parents=True, exist_ok=True)
                _save_rng(path, rank, data, device)
                if world > 1:
                    dist.barrier()  # the checkpoint is complete before anyone goes on
            bar.set_postfix(postfix, refresh=False)
            bar.update(1 if config.max_seconds is None else min(elapsed, config.max_seconds) - bar.n)
            if final:
                break
    return history
