"""How much memory a model needs: to hold it, to train it, and what one step really uses.

The chapter "Computational challenges" starts from bytes per parameter:

* holding the weights costs 4 bytes per parameter in fp32, 2 in fp16/bf16,
  1 in int8, half a byte in int4 (:func:`model_memory`);
* training with AdamW in fp32 adds 4 bytes of gradients and 8 bytes of
  optimizer state (Adam's two moments, Kingma & Ba 2015; Loshchilov & Hutter
  2019), plus the activations kept for the backward pass
  (:func:`training_memory`);
* mixed precision keeps an fp32 master copy, which is why it saves time but not
  much memory: 2 + 2 + 4 + 8 = 16 bytes per parameter before activations
  (Micikevicius et al. 2018, "Mixed Precision Training"; the 16-byte count is
  Rajbhandari et al. 2020, "ZeRO", section 3.1);
* across ``N`` devices, data parallelism repeats all of it on every device and
  ZeRO stages 1, 2 and 3 split the optimizer states, then the gradients, then
  the weights into ``N`` shards (:func:`sharded_memory`), at the price of the
  traffic :func:`communication_volume` counts (chapter "Training across
  devices").

Activations are estimated two ways. Given only a parameter count, the course's
rule of thumb is about 8 bytes per parameter in fp32, so fp32 AdamW training
takes about 4 + 4 + 8 + 8 = 24 bytes per parameter: 24 GB for a 1 B-parameter
model that needs 4 GB just to be held ("about 20 extra bytes per parameter").
Given a model config, activations follow Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (section 4.1), which
counts every tensor a transformer layer saves for the backward pass
(:func:`activation_memory`).

:func:`measure_training_memory` checks the predictions by running one real
AdamW step and adding up the bytes of the tensors it created.

All sizes are in bytes; tables and plots use decimal units (1 GB = 10^9 bytes).

Why one file of this size: it is one chapter's single model of memory
(estimate, then measure the same quantities), and splitting the estimates from
the measurements would separate each formula from the check that proves it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .checks import check_int, check_one_of
from .device import training_mode

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MemoryBreakdown",
    "model_memory",
    "training_memory",
    "activation_memory",
    "estimate_num_parameters",
    "measure_training_memory",
    "SHARDINGS",
    "sharded_memory",
    "communication_volume",
]

# Bits per stored weight for the dtype names model_memory accepts.
DTYPE_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}
PRECISIONS = ("fp32", "mixed-bf16", "bf16")
OPTIMIZERS = ("adamw", "adam", "sgd", "adam8bit")

# Bytes per parameter for (weights, gradients) under each training precision.
#   fp32:        fp32 weights (4) and fp32 gradients (4).
#   mixed-bf16:  bf16 working weights (2) + fp32 master weights (4) = 6, and bf16
#                gradients (2), the convention of Micikevicius et al. and ZeRO:
#                2 + 2 + 4 (master) + 8 (Adam) = 16. PyTorch's torch.autocast
#                splits it differently (fp32 weights 4, fp32 gradients 4, the bf16
#                copies are transient casts) and also lands on 4 + 4 + 8 = 16.
#   bf16:        everything in bf16: weights 2, gradients 2.
_WEIGHTS_GRADS = {"fp32": (4, 4), "mixed-bf16": (6, 2), "bf16": (2, 2)}
# Bytes of one stored activation element (mixed precision computes in bf16).
_ACTIVATION_BYTES = {"fp32": 4, "mixed-bf16": 2, "bf16": 2}
# The course's rule of thumb: about 8 bytes of activations per parameter in fp32,
# i.e. two activation elements per parameter; 4 bytes when activations are 16-bit.
_RULE_OF_THUMB_ELEMENTS_PER_PARAM = 2
# torch.optim.Adam/AdamW keep a float32 scalar "step" tensor per parameter tensor.
_ADAM_STEP_BYTES = 4


# --------------------------------------------------------------------------- checks


def _check_n_params(n_params: Any) -> int:
    if isinstance(n_params, bool) or not isinstance(n_params, numbers.Real):
        raise TypeError(f"n_params must be a number of parameters (int), got {type(n_params).__name__}")
    if not math.isfinite(n_params) or n_params != int(n_params):
        raise ValueError(f"n_params must be a whole number > 0, got {n_params}")
    if n_params <= 0:
        raise ValueError(f"n_params must be > 0, got {n_params}")
    return int(n_params)


_CONFIG_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def _is_config(obj: Any) -> bool:
    return all(hasattr(obj, field) for field in _CONFIG_FIELDS)


def _config_sizes(config: Any) -> tuple[int, int, int, int, int, int]:
    """(L, a, h, T, V, f): layers, heads, width, context, vocabulary, MLP width."""
    missing = [field for field in _CONFIG_FIELDS if not hasattr(config, field)]
    if missing:
        raise TypeError(f"config must have the attributes {_CONFIG_FIELDS}; {type(config).__name__} lacks {missing}")
    L, a, h, T, V = (check_int(f"config.{f}", getattr(config, f), minimum=1) for f in _CONFIG_FIELDS)
    n_inner = getattr(config, "n_inner", None)
    f = 4 * h if n_inner is None else check_int("config.n_inner", n_inner, minimum=1)
    return L, a, h, T, V, f


def _bytes_of(tensors: Any) -> int:
    """Total ``numel * element_size`` of the tensors in an iterable (others ignored)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _fmt_unit(unit: str) -> float:
    units = {"B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    if unit not in units:
        raise ValueError(f"unit must be one of {tuple(units)}, got {unit!r}")
    return units[unit]


# --------------------------------------------------------------------------- result


@dataclass
class MemoryBreakdown:
    """Bytes used by one training setup, split by what they hold.

    ``activations`` is ``None`` when it was not estimated or measured (a CPU
    measurement). ``total`` is the sum of the components that are known.
    ``peak`` is ``torch.cuda.max_memory_allocated`` for a CUDA measurement.
    Example: ``training_memory(1e9).total`` -> ``24_000_000_000``.
    """

    weights: int
    gradients: int
    optimizer_states: int
    activations: int | None
    n_params: int
    label: str = ""
    peak: int | None = None

    COMPONENTS: ClassVar[tuple[str, ...]] = ("weights", "gradients", "optimizer_states", "activations")

    @property
    def total(self) -> int:
        return sum(v for v in (getattr(self, c) for c in self.COMPONENTS) if v is not None)

    @property
    def per_param(self) -> dict[str, float | None]:
        """Bytes per parameter of each component and of the total, e.g. ``{'weights': 4.0, ...}``."""
        view = {c: (None if getattr(self, c) is None else getattr(self, c) / self.n_params) for c in self.COMPONENTS}
        view["total"] = self.total / self.n_params
        return view

    def as_dict(self) -> dict[str, Any]:
        """Components, total, parameter count, label and peak, in bytes, as a plain dict."""
        out: dict[str, Any] = {c: getattr(self, c) for c in self.COMPONENTS}
        out.update(total=self.total, n_params=self.n_params, label=self.label, peak=self.peak)
        return out

    def to_markdown(self, unit: str = "GB") -> str:
        """A Markdown table: one row per component, then the total, with the size
        in ``unit`` (decimal, 2 decimals) and in bytes per parameter."""
        scale = _fmt_unit(unit)
        rows = [f"| component | {unit} | bytes/param |", "|:--|--:|--:|"]
        names = {c: c.replace("_", " ") for c in self.COMPONENTS}
        for c in self.COMPONENTS:
            value = getattr(self, c)
            if value is None:
                rows.append(f"| {names[c]} | n/a | n/a |")
            else:
                rows.append(f"| {names[c]} | {value / scale:.2f} | {value / self.n_params:.2f} |")
        rows.append(f"| **total** | {self.total / scale:.2f} | {self.total / self.n_params:.2f} |")
        if self.peak is not None:
            rows.append(f"| peak (measured) | {self.peak / scale:.2f} | {self.peak / self.n_params:.2f} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        head = f"{self.label} ({self.n_params:,} parameters)\n\n" if self.label else ""
        return head + self.to_markdown()

    def plot(self, ax: Axes | None = None, unit: str | None = None) -> Figure:
        """Draw one stacked bar, a segment per known component; return the Figure.

        ``unit`` defaults to the largest of GB, MB, KB, B that keeps the total >= 1.
        Never calls ``plt.show()``: a new figure is a bare ``matplotlib.figure.Figure``.
        """
        from matplotlib.figure import Figure

        if unit is None:
            unit = next((u for u in ("GB", "MB", "KB") if self.total >= _fmt_unit(u)), "B")
        scale = _fmt_unit(unit)
        if ax is None:
            fig = Figure(figsize=(4.0, 4.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        colors = {"weights": "#4C72B0", "gradients": "#DD8452", "optimizer_states": "#55A868", "activations": "#C44E52"}
        bottom = 0.0
        for c in self.COMPONENTS:
            value = getattr(self, c)
            if value is None:
                continue
            height = value / scale
            ax.bar([0], [height], bottom=bottom, width=0.5, color=colors[c],
                   label=f"{c.replace('_', ' ')} ({value / self.n_params:.1f} B/param)")
            bottom += height
        ax.set_xticks([0], [self.label or "training"])
        ax.set_xlim(-0.75, 0.75)
        ax.set_ylabel(unit)
        ax.set_title(f"total {self.total / scale:.2f} {unit} ({self.total / self.n_params:.1f} B/param)")
        ax.legend(loc="upper right", fontsize="small")
        ax.set_ylim(0, bottom * 1.45 if bottom > 0 else 1)  # room for the legend above the bar
        return fig


# --------------------------------------------------------------------------- predictions


def model_memory(n_params: int | float, dtype: str | torch.dtype = "fp32") -> int:
    """Bytes to store ``n_params`` weights in ``dtype``, rounded up to whole bytes.

    ``dtype`` is one of ``"fp32"`` (4 bytes), ``"fp16"``/``"bf16"`` (2),
    ``"int8"`` (1), ``"int4"`` (half a byte: two weights per byte) or a
    ``torch.dtype``. Quantization scales and zero points are not included.
    Example: ``model_memory(7e9, "bf16")`` -> ``14_000_000_000`` (14 GB).
    """
    n = _check_n_params(n_params)
    if isinstance(dtype, torch.dtype):
        bits = torch.empty((), dtype=dtype).element_size() * 8
    elif dtype in DTYPE_BITS:
        bits = DTYPE_BITS[dtype]
    else:
        raise ValueError(f"dtype must be one of {tuple(DTYPE_BITS)} or a torch.dtype, got {dtype!r}")
    return (n * bits + 7) // 8


def estimate_num_parameters(config: Any) -> int:
    """Parameters of a GPT-2-style decoder-only transformer from its config.

    Counts, with ``d = n_embd``, ``f = n_inner`` (default ``4d``), ``V`` the
    vocabulary and ``T = block_size``:

    * token embedding ``V*d`` (the output layer is tied to it: no extra);
    * learned position embedding ``T*d``;
    * per layer: LayerNorm ``2d``; fused q, k, v projection ``3d*d + 3d``;
      attention output projection ``d*d + d``; LayerNorm ``2d``; MLP up
      ``d*f + f``; MLP down ``f*d + d``; i.e. ``12d^2 + 13d`` when ``f = 4d``;
    * final LayerNorm ``2d``.

    With ``config.bias = False`` (nanoGPT's option) the Linear layers and the
    LayerNorms have no bias. Example: GPT-2 small (``V=50257, T=1024, L=12,
    d=768``) -> ``124_439_808``.
    """
    L, _, d, T, V, f = _config_sizes(config)
    bias = bool(getattr(config, "bias", True))
    ln = 2 * d if bias else d
    per_layer = (
        ln  # ln_1
        + 3 * d * d + (3 * d if bias else 0)  # q, k, v
        + d * d + (d if bias else 0)  # attention output projection
        + ln  # ln_2
        + d * f + (f if bias else 0)  # MLP up
        + f * d + (d if bias else 0)  # MLP down
    )
    return V * d + T * d + L * per_layer + ln


def _num_param_tensors(config: Any) -> int:
    """Parameter tensors of the model :func:`estimate_num_parameters` counts."""
    L = _config_sizes(config)[0]
    bias = bool(getattr(config, "bias", True))
    per_layer = 12 if bias else 6  # ln_1, qkv, proj, ln_2, up, down: weight (+ bias)
    return 2 + L * per_layer + (2 if bias else 1)  # wte, wpe, layers, ln_f


def activation_memory(
    config: Any,
    batch_size: int = 1,
    seq_len: int | None = None,
    precision: str = "fp32",
    flash_attention: bool = False,
) -> int:
    """Bytes of activations saved for the backward pass of one training step.

    Korthikanti et al. 2022 (section 4.1, no recomputation, no parallelism) count,
    per transformer layer with ``s = seq_len``, ``b = batch_size``,
    ``h = n_embd``, ``a = n_head``, in 16-bit activations with 1-byte dropout masks:

    * attention: 11*s*b*h + 5*a*s^2*b (q, k, v inputs, softmax, its dropout mask
      and output, the output projection's input and dropout mask);
    * MLP: 19*s*b*h (its input, the GELU input and output of width 4h, the mask);
    * two LayerNorm inputs: 4*s*b*h;

    i.e. ``s*b*h*(34 + 5*a*s/h)`` bytes. For an MLP width ``f`` other than
    ``4h`` the MLP term is ``3*s*b*h + 4*s*b*f`` (the same at ``f = 4h``).
    ``flash_attention=True`` drops the ``5*a*s^2*b`` term: fused attention never
    stores the ``s x s`` scores (it keeps only ``a*s*b`` softmax statistics,
    neglected here). Outside the layers, the paper adds ``5*s*b*h`` (embedding
    dropout mask, final LayerNorm and output-layer inputs) and ``4*s*b*V`` for the
    fp32 logits of the cross-entropy, which we include.

    Precision: ``"mixed-bf16"`` and ``"bf16"`` use the formula as is. For
    ``"fp32"`` the 16-bit terms are doubled, and, as the usual simplification,
    so are the 1-byte dropout masks (exactly: 66 and 9 instead of 68 and 10);
    the fp32 logits term is unchanged.
    Example: GPT-2 small (L=12, a=12, h=768, V=50257), b=1, s=1024, fp32 ->
    ``2 * 12 * 1024*768*(34 + 80) + 2 * 5*1024*768 + 4*1024*50257``, about 2.37 GB.
    """
    L, a, h, T, V, f = _config_sizes(config)
    b = check_int("batch_size", batch_size, minimum=1)
    s = T if seq_len is None else check_int("seq_len", seq_len, minimum=1)
    if s > T:
        raise ValueError(f"seq_len must be <= config.block_size = {T}, got {s}")
    check_one_of("precision", precision, PRECISIONS)
    per_layer = 11 * s * b * h + (3 * s * b * h + 4 * s * b * f) + 4 * s * b * h
    if not flash_attention:
        per_layer += 5 * a * s * s * b
    outside_layers = 5 * s * b * h
    scale = _ACTIVATION_BYTES[precision] // 2  # 2 for fp32, 1 for 16-bit
    return scale * (L * per_layer + outside_layers) + 4 * s * b * V


def _optimizer_bytes_per_param(optimizer: str, precision: str, momentum: bool) -> int:
    if optimizer in ("adamw", "adam"):
        # two moments (exp_avg, exp_avg_sq): fp32 unless the whole run is bf16
        return 4 if precision == "bf16" else 8
    if optimizer == "sgd":
        # plain SGD keeps nothing; momentum keeps one buffer like the (master) weights
        if not momentum:
            return 0
        return 2 if precision == "bf16" else 4
    return 2  # adam8bit (Dettmers et al. 2022): two 8-bit moments; block scales neglected


def training_memory(
    config_or_n_params: Any,
    precision: str = "fp32",
    optimizer: str = "adamw",
    batch_size: int = 1,
    seq_len: int | None = None,
    *,
    flash_attention: bool = False,
    momentum: bool = False,
    n_param_tensors: int | None = None,
) -> MemoryBreakdown:
    """Predict the memory of one training step, split into its components.

    ``config_or_n_params`` is a parameter count or a config (any object with
    ``n_layer, n_head, n_embd, block_size, vocab_size``, like
    ``TransformerConfig``; its parameters are :func:`estimate_num_parameters`).

    Bytes per parameter:

    ==============  =========  =========  ===========================================
    precision       weights    gradients  optimizer states
    ==============  =========  =========  ===========================================
    ``fp32``        4          4          adamw/adam 8 (two fp32 moments)
    ``mixed-bf16``  2 + 4      2          adamw/adam 8; the 4 is the fp32 master copy
    ``bf16``        2          2          adamw/adam 4 (moments in bf16)
    ==============  =========  =========  ===========================================

    ``optimizer="sgd"`` keeps no state (0 bytes) unless ``momentum=True`` (one
    buffer: 4 bytes, 2 in bf16); ``"adam8bit"`` keeps two 8-bit moments, 2 bytes.
    PyTorch's Adam/AdamW also keep a 4-byte ``step`` scalar per parameter
    *tensor*: it is counted when the number of tensors is known (from a config,
    or ``n_param_tensors=``) and otherwise left out (a few kB at most).

    Activations: with a config, :func:`activation_memory` (Korthikanti et al.
    2022) for ``batch_size`` sequences of ``seq_len`` tokens (default
    ``block_size``). With only a parameter count, the course's rule of thumb of
    about 8 bytes per parameter in fp32 (4 with 16-bit activations); a count says
    nothing about batch or sequence length, so ``batch_size``, ``seq_len`` and
    ``flash_attention`` then raise ``ValueError`` unless left at their defaults.

    Example: ``training_memory(1e9)`` -> weights 4 GB, gradients 4 GB, optimizer
    8 GB, activations 8 GB, total 24 GB: 24 bytes per parameter.
    """
    check_one_of("precision", precision, PRECISIONS)
    check_one_of("optimizer", optimizer, OPTIMIZERS)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if momentum and optimizer != "sgd":
        raise ValueError(f"momentum=True only applies to optimizer='sgd', got optimizer={optimizer!r}")

    if isinstance(config_or_n_params, numbers.Real) and not isinstance(config_or_n_params, bool):
        n = _check_n_params(config_or_n_params)
        if batch_size != 1 or seq_len is not None or flash_attention:
            raise ValueError(
                "batch_size, seq_len and flash_attention need a config (with n_layer, n_head, n_embd, "
                "block_size, vocab_size); the rule of thumb for a bare parameter count has no batch or "
                f"sequence length, got batch_size={batch_size}, seq_len={seq_len}, flash_attention={flash_attention}"
            )
        activations = _RULE_OF_THUMB_ELEMENTS_PER_PARAM * _ACTIVATION_BYTES[precision] * n
        tensors = 0 if n_param_tensors is None else check_int("n_param_tensors", n_param_tensors, minimum=1)
        what = ""
    elif _is_config(config_or_n_params):
        config = config_or_n_params
        n = estimate_num_parameters(config)
        activations = activation_memory(config, batch_size, seq_len, precision, flash_attention)
        tensors = (_num_param_tensors(config) if n_param_tensors is None
                   else check_int("n_param_tensors", n_param_tensors, minimum=1))
        what = f", batch {batch_size} x {seq_len or config.block_size} tokens"
    else:
        raise TypeError(
            "config_or_n_params must be a parameter count or a config with attributes "
            f"{_CONFIG_FIELDS}, got {type(config_or_n_params).__name__}"
        )

    weight_bytes, grad_bytes = _WEIGHTS_GRADS[precision]
    optimizer_states = _optimizer_bytes_per_param(optimizer, precision, momentum) * n
    if optimizer in ("adamw", "adam"):
        optimizer_states += _ADAM_STEP_BYTES * tensors
    return MemoryBreakdown(
        weights=weight_bytes * n,
        gradients=grad_bytes * n,
        optimizer_states=optimizer_states,
        activations=activations,
        n_params=n,
        label=f"{precision} + {optimizer}{' (momentum)' if momentum else ''}{what}",
    )


# --------------------------------------------------------------------------- measurement


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def measure_training_memory(
    model: torch.nn.Module,
    batch: Any,
    optimizer: str = "adamw",
    device: str | torch.device | None = None,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    *,
    momentum: bool = False,
) -> MemoryBreakdown:
    """Run one real forward, backward and optimizer step and report the bytes used.

    The loss is ``model(**batch)[1]`` (the course's models return
    ``(logits, loss)``), or ``loss_fn(model, batch)`` for any other module, e.g.
    ``loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1])``. ``optimizer`` is
    ``"adamw"``, ``"adam"`` or ``"sgd"`` (``momentum=True`` for 0.9); the step
    uses learning rate 0, so the states are allocated exactly as in training but
    the weights do not change. The model is moved to ``device`` (default: where
    its parameters are) and its gradients are cleared again at the end.

    Counted from the tensors themselves on every device (``numel * element_size``):
    ``weights`` (all parameters, buffers excluded), ``gradients`` (every ``.grad``)
    and ``optimizer_states`` (every tensor in ``optimizer.state``, including Adam's
    ``step`` scalars). ``activations`` is ``None`` on CPU and MPS. On CUDA it is
    the memory the forward pass leaves allocated for the backward pass
    (``memory_allocated`` after minus before the forward: saved tensors,
    logits, loss), and ``peak`` is ``max_memory_allocated`` over the whole step.
    """
    check_one_of("optimizer", optimizer, ("adamw", "adam", "sgd"))
    if momentum and optimizer != "sgd":
        raise ValueError(f"momentum=True only applies to optimizer='sgd', got optimizer={optimizer!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is None and not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a dict of model inputs (model(**batch) is called) unless loss_fn is given, "
            f"got {type(batch).__name__}"
        )
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters (requires_grad=True) to measure")
    if device is None:
        device = params[0].device
    device = torch.device(device)
    model.to(device)
    batch = _to_device(batch, device)

    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(trainable, lr=0.0, momentum=0.9 if momentum else 0.0)
    elif optimizer == "adam":
        opt = torch.optim.Adam(trainable, lr=0.0)
    else:
        opt = torch.optim.AdamW(trainable, lr=0.0)
    model.zero_grad(set_to_none=True)
    cuda = device.type == "cuda"
    activations = peak = None
    with training_mode(model):
        try:
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before_forward = torch.cuda.memory_allocated(device)
            if loss_fn is None:
                output = model(**batch)
                loss = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            else:
                output = loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise ValueError(
                    "the loss must be a scalar tensor that requires grad: model(**batch)[1] for the course's "
                    f"models (pass labels in the batch) or loss_fn(model, batch); got {type(loss).__name__}"
                )
            if cuda:
                torch.cuda.synchronize(device)
                activations = torch.cuda.memory_allocated(device) - before_forward
            loss.backward()
            del output, loss
            opt.step()
            if cuda:
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
            weights = _bytes_of(params)
            gradients = _bytes_of(p.grad for p in params)
            optimizer_states = sum(_bytes_of(state.values()) for state in opt.state.values())
        finally:
            model.zero_grad(set_to_none=True)  # the measured step leaves no gradients behind, even on an error
    return MemoryBreakdown(
        weights=weights,
        gradients=gradients,
        optimizer_states=optimizer_states,
        activations=activations,
        n_params=sum(p.numel() for p in params),
        label=f"measured on {device.type} ({optimizer})",
        peak=peak,
    )


# --------------------------------------------------------------------------- across devices

#: Ways to spread training over ``N`` data-parallel devices (Rajbhandari et al. 2020):
#: ``ddp`` repeats weights, gradients and optimizer states on every device; ZeRO
#: stage 1 shards the optimizer states, stage 2 also the gradients, stage 3 also
#: the weights. ``"fsdp"`` (PyTorch's fully sharded data parallel) is stage 3.
SHARDINGS = ("ddp", "zero1", "zero2", "zero3", "fsdp")
# What each strategy shards: (weights, gradients, optimizer states).
_SHARDED = {"ddp": (False, False, False), "zero1": (False, False, True), "zero2": (False, True, True),
            "zero3": (True, True, True), "fsdp": (True, True, True)}


def _check_sharding(sharding: Any, world_size: Any, rank: Any) -> tuple[str, int, int]:
    check_one_of("sharding", sharding, SHARDINGS)
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1, hint="world_size - 1")
    return sharding, world_size, rank


def _dim0_rows(rows: int, world_size: int, rank: int) -> int:
    """Rows of a tensor with ``rows`` rows that ``rank`` keeps when it is cut along
    dim 0 into ``world_size`` chunks of ``ceil(rows / world_size)`` rows (the last
    ranks may get fewer or none: ``torch.chunk``, as FSDP2's ``fully_shard`` cuts)."""
    chunk = -(-rows // world_size)
    return max(0, min(chunk, rows - rank * chunk))


def _zero1_owner(groups: list[list[torch.Tensor]], world_size: int) -> dict[int, int]:
    """``id(param) -> rank`` as ``torch.distributed.optim.ZeroRedundancyOptimizer``
    assigns whole tensors: group by group, largest first, each to the rank that
    holds the fewest elements so far (ties: the lowest rank)."""
    sizes, owner = [0] * world_size, {}
    for group in groups:
        for p in sorted(group, key=lambda t: t.numel(), reverse=True):
            rank = sizes.index(min(sizes))
            owner[id(p)] = rank
            sizes[rank] += p.numel()
    return owner


_DTYPE_BYTES_16 = 2  # the bf16 working copy of mixed precision


def sharded_memory(
    model_or_n_params: Any,
    sharding: str,
    world_size: int,
    *,
    rank: int = 0,
    precision: str = "fp32",
    optimizer: str = "adamw",
    param_groups: list[list[torch.Tensor]] | None = None,
) -> MemoryBreakdown:
    """Predict the bytes of weights, gradients and optimizer states that device
    ``rank`` of ``world_size`` holds between two training steps.

    ``sharding`` is one of :data:`SHARDINGS`. With a parameter count ``n`` this
    is the ZeRO paper's model (Rajbhandari et al. 2020, section 5 and Figure 1):
    a sharded component costs its bytes per parameter times ``ceil(n / N)``, a
    repeated one times ``n``. With mixed precision the fp32 master copy belongs
    to the optimizer states (the paper's K = 12 bytes: master weights and Adam's
    two moments), so the weights are the 2-byte working copy:
    ``sharded_memory(7.5e9, "ddp", 64, precision="mixed-bf16").total`` is
    (2 + 2 + 12) x 7.5e9 = 120 GB and ``"zero3"`` is about 1.9 GB.

    With an ``nn.Module`` the prediction is exact for the tensors PyTorch's own
    engines keep on each rank (fp32 only): DDP repeats everything; ZeRO-1 is
    ``ZeroRedundancyOptimizer``, which gives each rank the optimizer states of
    whole tensors (largest first, to the least-loaded rank, over
    ``param_groups``: default one group of the trainable parameters, in
    ``model.parameters()`` order); ZeRO-2 and ZeRO-3/FSDP cut every tensor
    along its first dimension as FSDP2's ``fully_shard`` does (``ceil(rows / N)``
    rows per rank, the last ranks get fewer). Adam/AdamW keep a 4-byte ``step``
    per tensor they update. Activations are not included (``None``): every
    device computes its own micro-batch in every strategy, so they do not
    shrink with ``N`` (chapter "Computational challenges" estimates them).
    """
    sharding, world_size, rank = _check_sharding(sharding, world_size, rank)
    check_one_of("precision", precision, PRECISIONS)
    check_one_of("optimizer", optimizer, OPTIMIZERS)
    shard_w, shard_g, shard_o = _SHARDED[sharding]
    if isinstance(model_or_n_params, torch.nn.Module):
        if precision != "fp32" or optimizer not in ("adamw", "adam", "sgd"):
            raise ValueError("a module's exact prediction covers precision='fp32' with optimizer 'adamw', 'adam' "
                             f"or 'sgd'; got precision={precision!r}, optimizer={optimizer!r}: give a parameter "
                             "count for the other cases")
        return _module_sharded_memory(model_or_n_params, sharding, world_size, rank, optimizer, param_groups)
    if param_groups is not None:
        raise ValueError("param_groups applies to a module, not to a parameter count")
    n = _check_n_params(model_or_n_params)
    shard = -(-n // world_size)
    working, grad_bytes = _WEIGHTS_GRADS[precision]
    master = working - _DTYPE_BYTES_16 if precision == "mixed-bf16" else 0  # the fp32 master copy
    states = _optimizer_bytes_per_param(optimizer, precision, momentum=False) + master
    return MemoryBreakdown(
        weights=(working - master) * (shard if shard_w else n),
        gradients=grad_bytes * (shard if shard_g else n),
        optimizer_states=states * (shard if shard_o else n),
        activations=None,
        n_params=n,
        label=f"{sharding}, {world_size} device{'s' if world_size > 1 else ''}, {precision} + {optimizer}",
    )



def _module_sharded_memory(model: torch.nn.Module, sharding: str, world_size: int, rank: int,
                           optimizer: str, param_groups: list[list[torch.Tensor]] | None) -> MemoryBreakdown:
    shard_w, shard_g, shard_o = _SHARDED[sharding]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    groups = [params] if param_groups is None else [list(g) for g in param_groups]
    if any(p.dim() == 0 for p in params):
        raise ValueError("a parameter with no dimension cannot be cut along dim 0; give a parameter count instead")
    owner = _zero1_owner(groups, world_size) if sharding == "zero1" else {}
    per_element = {"adamw": 8, "adam": 8, "sgd": 0}[optimizer]
    step = _ADAM_STEP_BYTES if optimizer in ("adamw", "adam") else 0
    weights = gradients = states = 0
    for p in params:
        full = p.numel() * p.element_size()
        local = _dim0_rows(p.shape[0], world_size, rank) * (p.numel() // p.shape[0]) * p.element_size()
        weights += local if shard_w else full
        gradients += local if shard_g else full
        if sharding == "zero1":
            states += (p.numel() * per_element + step) if owner[id(p)] == rank else 0
        else:
            states += (local if shard_o else full) // p.element_size() * per_element + step
    return MemoryBreakdown(
        weights=weights, gradients=gradients, optimizer_states=states, activations=None,
        n_params=sum(p.numel() for p in params),
        label=f"{sharding}, rank {rank} of {world_size} (exact, fp32 + {optimizer})",
    )


def _padded_numel(p: torch.Tensor, world_size: int) -> int:
    """Elements of ``p`` once FSDP2 pads its first dimension to a multiple of ``world_size`` rows."""
    return -(-p.shape[0] // world_size) * world_size * (p.numel() // p.shape[0])


def communication_volume(
    model_or_n_params: Any,
    sharding: str,
    world_size: int,
    *,
    bytes_per_element: int = 4,
    fsdp_units: list[torch.nn.Module] | None = None,
) -> dict[str, int]:
    """Bytes each collective carries in one training step: its payload, the size
    of the whole tensor it reduces or gathers, per collective kind.

    * ``ddp``: one all-reduce of every gradient (``{"all_reduce": P}``, ``P`` the
      bytes of the parameters);
    * ``zero1`` as PyTorch runs it (DDP plus ``ZeroRedundancyOptimizer``): the
      same all-reduce, then each rank broadcasts the weights it updated
      (``"broadcast": P``). The ZeRO paper's stage 1 and 2 replace the all-reduce
      by a reduce-scatter and gather the weights back (``zero2``:
      ``{"reduce_scatter": P, "all_gather": P}``);
    * ``zero3``/``fsdp``: the weights are gathered before the forward and again
      before the backward, and the gradients reduce-scattered
      (``{"all_gather": 2P, "reduce_scatter": P}``). By default PyTorch's FSDP
      keeps the outermost (root) unit's gathered weights from the forward to
      the backward pass, so they are gathered once: with a module as the model, give
      the submodules that got their own ``fully_shard`` as ``fsdp_units`` and
      the parameters outside them count once in ``"all_gather"``. With a module
      the payloads are padded as FSDP2 pads them (each tensor to a multiple of
      ``world_size`` rows).

    How many of those bytes a device sends depends on the algorithm: a ring
    all-reduce sends ``2 (N - 1) / N`` times the payload from each device, a
    ring all-gather or reduce-scatter ``(N - 1) / N`` (Rajbhandari et al. 2020,
    section 7: stages 1 and 2 cost what DDP costs, stage 3 one and a half times).
    """
    sharding, world_size, _ = _check_sharding(sharding, world_size, 0)
    bytes_per_element = check_int("bytes_per_element", bytes_per_element, minimum=1)
    if isinstance(model_or_n_params, torch.nn.Module):
        params = [p for p in model_or_n_params.parameters() if p.requires_grad]
        full = sum(p.numel() for p in params) * bytes_per_element
        padded = sum(_padded_numel(p, world_size) for p in params) * bytes_per_element
        root = 0
        if fsdp_units is not None:
            inner = {id(p) for unit in fsdp_units for p in unit.parameters()}
            root = sum(_padded_numel(p, world_size) for p in params if id(p) not in inner) * bytes_per_element
    else:
        if fsdp_units is not None:
            raise ValueError("fsdp_units applies to a module, not to a parameter count")
        full = padded = _check_n_params(model_or_n_params) * bytes_per_element
        root = 0
    if sharding == "ddp":
        return {"all_reduce": full}
    if sharding == "zero1":
        return {"all_reduce": full, "broadcast": full}
    if sharding == "zero2":
        return {"reduce_scatter": padded, "all_gather": padded}
    return {"all_gather": 2 * padded - root, "reduce_scatter": padded}
