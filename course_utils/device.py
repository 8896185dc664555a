"""Where and how the code runs: device choice, the autocast dtype, seeding, train/eval mode.

The same notebook runs on a laptop CPU, an Apple GPU (MPS) and a Colab or
data-centre NVIDIA GPU (CUDA). :func:`get_device` picks the best available one,
:func:`autocast_dtype` says which low-precision type to compute in there, and
:func:`seed_everything` makes runs repeatable. :func:`evaluating` and
:func:`training_mode` switch a model's mode (dropout on or off) for a block of
code and put the old mode back afterwards, even when the block fails.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
import torch.nn as nn

from .checks import check_int

__all__ = ["get_device", "mps_is_usable", "autocast_dtype", "seed_everything", "describe_device",
           "training_mode", "evaluating"]

_KNOWN = ("cpu", "cuda", "mps")


def mps_is_usable() -> bool:
    """True when torch was built with MPS, an Apple GPU is present, and a tiny
    matmul there gives the same answer as on the CPU (older builds did not)."""
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        return False
    try:
        a = torch.arange(12.0).reshape(3, 4)
        on_mps = (a.to("mps") @ a.T.to("mps")).cpu()
        return bool(torch.allclose(on_mps, a @ a.T))
    except Exception:  # pragma: no cover - depends on hardware
        return False


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    With ``preferred=None``: CUDA if available, else Apple MPS if usable, else CPU.
    With ``preferred`` given ("cpu", "cuda", "cuda:1", "mps"), check that it is
    available and return it, or raise ``ValueError`` saying what is available.

    Example: ``get_device()`` -> ``device(type='cpu')`` on a laptop without a GPU.
    """
    if preferred is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_is_usable():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"preferred must be one of {_KNOWN} (optionally with an index, e.g. 'cuda:0'), got {preferred!r}"
        ) from err
    available = available_devices()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"preferred={preferred!r} but CUDA is not available here; available: {available}")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"preferred={preferred!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not mps_is_usable():
        raise ValueError(f"preferred={preferred!r} but Apple MPS is not usable here; available: {available}")
    elif device.type not in _KNOWN:
        raise ValueError(f"preferred must be one of {_KNOWN}, got {preferred!r}")
    return device


def available_devices() -> list[str]:
    """The device types usable here, best first, e.g. ``['cuda', 'cpu']``."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if mps_is_usable():
        found.append("mps")
    return found + ["cpu"]


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype to autocast to on ``device``: bf16 on a CUDA GPU that supports
    it (Ampere and newer), otherwise fp32 (no autocast).

    CPU autocast to bf16 exists but is slow on most laptop CPUs, and MPS bf16
    support varies by macOS version, so the course keeps both in fp32.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    check_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def describe_device(device: str | torch.device | None = None) -> str:
    """One line naming the device, e.g. ``'cuda: NVIDIA H100 80GB HBM3 (bf16)'``."""
    device = get_device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"cuda: {name} ({str(autocast_dtype(device)).replace('torch.', '')})"
    if device.type == "mps":
        return "mps: Apple GPU (fp32)"
    return f"cpu: {torch.get_num_threads()} threads (fp32)"


@contextmanager
def training_mode(model: nn.Module, training: bool = True) -> Iterator[nn.Module]:
    """Run a ``with`` block with ``model`` in training mode (``training=False``:
    evaluation mode), then give every submodule back the mode it had, also when
    the block raises.

    Example: ``with training_mode(model, False): logits = model(ids)[0]`` runs
    without dropout; ``model.training`` is what it was before afterwards.
    """
    modes = [(m, m.training) for m in model.modules()]  # each submodule's own mode
    model.train(training)
    try:
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


def evaluating(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """``with evaluating(model):`` runs the block in evaluation mode (no dropout),
    then restores the previous mode, also on an error. Same as ``training_mode(model, False)``."""
    return training_mode(model, False)
