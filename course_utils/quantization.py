"""Number formats and int8 quantization of a model's weights.

This module backs the chapter "Computational challenges: memory and
quantization". It reads top to bottom:

1. number formats: what fp32, fp16, bf16, float8 and int8 can hold
   (``number_formats``) and what a given number becomes in each (``represent``);
2. int8 quantization of a tensor: absmax (symmetric) and zero-point
   (asymmetric), per tensor, per row or per group of columns;
3. ``QuantizedLinear`` and ``quantize_model``: weight-only int8 for every
   ``nn.Linear`` of a model, or a plain cast to fp16/bf16;
4. ``evaluate_quantization``: size and perplexity of each scheme.

References (facts, not code, are borrowed):

- IEEE 754-2008 (binary32, binary16); the bfloat16 format (Google Brain);
  float8 E4M3/E5M2 from Micikevicius et al., "FP8 Formats for Deep Learning"
  (2022). All numbers shown come from ``torch.finfo``/``torch.iinfo``.
- Jacob et al., "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference" (2018): the affine (zero-point) scheme.
- Dettmers et al., "LLM.int8()" (2022): absmax quantization, per-row scales
  and why outliers make per-tensor scales coarse.

Conventions. ``scale`` is always "the float value of one integer step", so a
tensor is approximately ``q * scale`` (absmax) or ``(q - zero_point) * scale``
(zero-point). Scales are float32. ``torch.round`` rounds halves to even.

Why one file of this size: the four parts build on each other in the order the
chapter teaches them (formats, then a tensor, then a model, then its
evaluation), and a reader follows one thread from ``represent`` to
``evaluate_quantization``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import check_int

__all__ = [
    "Table",
    "FormatInfo",
    "Representation",
    "QuantizationResult",
    "SCHEMES",
    "number_formats",
    "represent",
    "absmax_quantize",
    "absmax_dequantize",
    "zeropoint_quantize",
    "zeropoint_dequantize",
    "QuantizedLinear",
    "quantize_model",
    "model_size_bytes",
    "evaluate_quantization",
]


# ---------------------------------------------------------------------------
# A tiny table type: a list of dataclass rows that prints as Markdown
# ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class Table(list):
    """A list of dataclass rows; ``print(table)`` or a notebook shows Markdown.

    Example: ``print(number_formats())`` prints one row per format.
    """

    def to_markdown(self) -> str:
        if not self:
            return ""
        names = [f.name for f in fields(self[0])]
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        for row in self:
            lines.append("| " + " | ".join(_fmt(getattr(row, n)) for n in names) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:  # Jupyter renders this as a table
        return self.to_markdown()


# ---------------------------------------------------------------------------
# 1. Number formats
# ---------------------------------------------------------------------------


def _float_formats() -> list[tuple[str, torch.dtype]]:
    """(name, dtype) of the floating formats this torch build knows."""
    formats = [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]
    for name, attr in (("fp8-e4m3fn", "float8_e4m3fn"), ("fp8-e5m2", "float8_e5m2")):
        if hasattr(torch, attr):  # float8 types arrived in torch 2.1
            formats.append((name, getattr(torch, attr)))
    return formats


@dataclass
class FormatInfo:
    """One number format. For int8, ``tiny`` is the smallest positive value (1)
    and ``eps``/``exponent_bits``/``mantissa_bits`` do not apply (None)."""

    name: str
    bits: int
    exponent_bits: int | None
    mantissa_bits: int | None  # stored fraction bits, without the implicit 1
    max: float  # largest finite value
    tiny: float  # smallest positive normal number
    eps: float | None  # gap between 1.0 and the next representable number


def number_formats() -> Table:
    """fp32, fp16, bf16, float8 (if available) and int8, from ``torch.finfo``.

    Example: ``number_formats()[1].max == 65504.0`` (fp16).
    """
    rows = Table()
    for name, dtype in _float_formats():
        fi = torch.finfo(dtype)
        mantissa = round(-math.log2(fi.eps))  # eps = 2**-mantissa_bits
        rows.append(
            FormatInfo(
                name=name,
                bits=fi.bits,
                exponent_bits=fi.bits - 1 - mantissa,  # minus the sign bit
                mantissa_bits=mantissa,
                max=float(fi.max),
                tiny=float(fi.tiny),
                eps=float(fi.eps),
            )
        )
    ii = torch.iinfo(torch.int8)
    rows.append(FormatInfo("int8", ii.bits, None, None, float(ii.max), 1.0, None))
    return rows


@dataclass
class Representation:
    """What ``value`` becomes when stored in ``format``."""

    format: str
    stored: float
    abs_error: float
    rel_error: float
    note: str


def _note(value: float, stored: float, dtype: torch.dtype | None) -> str:
    if math.isnan(stored) and not math.isnan(value):
        return "overflow -> nan"
    if math.isinf(stored) and not math.isinf(value):
        return "overflow -> inf"
    if dtype is None:  # int8
        if value != stored and abs(value) > 127:
            return "saturated (out of range)"
        return "rounded to an integer" if value != stored else "exact"
    fi = torch.finfo(dtype)
    if abs(value) > fi.max and abs(stored) == fi.max:
        return "saturated at max (no inf in this format)"
    if stored == 0 and value != 0:
        return "underflow -> 0"
    if 0 < abs(stored) < fi.tiny:
        return "subnormal (reduced precision)"
    return "exact" if stored == value else "rounded"


def represent(value: float) -> Table:
    """The stored value of ``value`` in each format, with its error.

    Floats use ``torch.tensor(value, dtype=float64).to(format)`` (round to
    nearest), so overflow shows what the installed torch really does (inf for
    fp16; for float8 e4m3fn, which has no inf, saturation at 448 from torch
    2.13 on and nan in earlier versions). int8 here means "round to
    the nearest integer and saturate at -128/127": no scale, just the grid.

    Example: ``represent(70000.0)`` shows fp16 -> inf, bf16 -> 70144.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a Python int or float, got {type(value).__name__}")
    value = float(value)
    rows = Table()
    source = torch.tensor(value, dtype=torch.float64)
    formats: list[tuple[str, torch.dtype | None]] = [*_float_formats(), ("int8", None)]
    for name, dtype in formats:
        if dtype is None:
            stored = float(source.round().clamp(-128, 127).to(torch.int8).item())
        else:
            stored = float(source.to(dtype).to(torch.float64).item())
        abs_error = abs(stored - value)
        if value == 0:
            rel_error = 0.0 if stored == 0 else math.inf
        else:
            rel_error = abs_error / abs(value)
        rows.append(Representation(name, stored, abs_error, rel_error, _note(value, stored, dtype)))
    return rows


# ---------------------------------------------------------------------------
# 2. int8 quantization of a tensor
# ---------------------------------------------------------------------------

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_GRANULARITIES = ("tensor", "row", "group")


def _check_input(x: Any, granularity: str, group_size: int | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"x must be a floating tensor (float16, bfloat16, float32 or float64), got {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x must contain only finite values, got inf or nan")
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
    if granularity != "tensor" and x.dim() == 0:
        raise ValueError(f"granularity {granularity!r} needs at least 1 dimension, got a 0-d tensor")
    if granularity == "group":
        if group_size is None:  # the default, meaning "not given": a missing setting, not a wrong type
            raise ValueError("group_size must be given (an int >= 1) for granularity 'group', got None")
        check_int("group_size", group_size, minimum=1, hint="for granularity 'group'")
        if x.shape[-1] % group_size != 0:
            raise ValueError(
                f"group_size must divide the last dimension of x ({x.shape[-1]}), got {group_size}"
            )
    elif group_size is not None:
        raise ValueError(f"group_size is only used with granularity 'group', got {group_size!r} with {granularity!r}")


def _reduce(x: torch.Tensor, granularity: str, group_size: int | None, op) -> torch.Tensor:
    """Apply a reduction (amax/amin) per block.

    Shapes for x of shape (..., D): tensor -> (), row -> (..., 1),
    group -> (..., D // group_size).
    """
    if granularity == "tensor":
        return op(x)
    if granularity == "row":
        return op(x, dim=-1, keepdim=True)  # (..., 1)
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)  # (..., G, gs)
    return op(blocks, dim=-1)  # (..., G)


def _expand(stat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-block statistic back to q's shape (..., D).

    Example: stat (2, 3) and q (2, 12) -> each stat repeated 4 times -> (2, 12).
    """
    if stat.dim() == 0:
        return stat
    if stat.shape[:-1] != q.shape[:-1] or q.shape[-1] % stat.shape[-1] != 0:
        raise ValueError(
            f"scale must have shape () or (..., G) with q.shape[:-1] == (...) and G dividing "
            f"q.shape[-1]; got scale {tuple(stat.shape)} for q {tuple(q.shape)}"
        )
    return stat.repeat_interleave(q.shape[-1] // stat.shape[-1], dim=-1)


def _check_q(q: Any) -> None:
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
        got = q.dtype if isinstance(q, torch.Tensor) else type(q).__name__
        raise TypeError(f"q must be a torch.int8 tensor, got {got}")


def absmax_quantize(
    x: torch.Tensor, granularity: str = "tensor", group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8: ``q = round(127 * x / max|x|)``, ``scale = max|x| / 127``.

    x: (..., D) float. Returns q (same shape, torch.int8, values in [-127, 127])
    and float32 scale of shape () per tensor, (..., 1) per row, or
    (..., D // group_size) per group of ``group_size`` consecutive elements of
    the last dimension. A block of zeros gets scale 0 and q = 0.

    Example: ``[1.2, -0.5, 0.0, 2.54]`` -> q ``[60, -25, 0, 127]``, scale 0.02.
    """
    _check_input(x, granularity, group_size)
    x = x.float()
    amax = _reduce(x.abs(), granularity, group_size, torch.amax)
    scale = amax / 127
    safe = _expand(torch.where(amax == 0, torch.ones_like(amax), amax), x)  # never divide by 0
    q = torch.round(x * 127 / safe).clamp(-127, 127).to(torch.int8)
    return q, scale


def absmax_dequantize(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``q * scale``, with scale broadcast per tensor, row or group (from its shape).

    Example: q ``[60, -25, 0, 127]``, scale 0.02 -> ``[1.2, -0.5, 0.0, 2.54]``.
    """
    _check_q(q)
    return (q.float() * _expand(scale.float(), q)).to(dtype)


def zeropoint_quantize(
    x: torch.Tensor, granularity: str = "tensor", group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int8: map [min, max] of each block onto [-128, 127].

    ``scale = (max - min) / 255``, ``zero_point = -round(min / scale) - 128``,
    ``q = clamp(round(x / scale) + zero_point, -128, 127)``. Shapes as in
    ``absmax_quantize``; zero_point is int32 with the scale's shape. It lies in
    [-128, 127] when the block contains 0, but may fall outside when it does
    not (all-positive data gives a zero point below -128). A constant block c
    uses the range [min(c, 0), max(c, 0)] so that c is exact.

    Example: ``[-1.0, 0.0, 1.55]`` -> scale 0.01, zero_point -28, q ``[-128, -28, 127]``.
    """
    _check_input(x, granularity, group_size)
    x = x.float()
    lo = _reduce(x, granularity, group_size, torch.amin)
    hi = _reduce(x, granularity, group_size, torch.amax)
    flat = hi == lo  # constant block: widen its range to include 0
    lo = torch.where(flat, lo.clamp(max=0), lo)
    hi = torch.where(flat, hi.clamp(min=0), hi)
    scale = (hi - lo) / 255
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)  # all-zero block
    zero_point = (-torch.round(lo / safe) - 128).to(torch.int32)
    q = torch.round(x / _expand(safe, x)) + _expand(zero_point, x)
    return q.clamp(-128, 127).to(torch.int8), scale, zero_point


def zeropoint_dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero_point) * scale``, broadcast per tensor, row or group.

    Example: q ``[-128, -28, 127]``, scale 0.01, zero_point -28 -> ``[-1.0, 0.0, 1.55]``.
    """
    _check_q(q)
    if zero_point.shape != scale.shape:
        raise ValueError(
            f"zero_point must have the scale's shape {tuple(scale.shape)}, got {tuple(zero_point.shape)}"
        )
    shifted = q.float() - _expand(zero_point.float(), q)
    return (shifted * _expand(scale.float(), q)).to(dtype)


# ---------------------------------------------------------------------------
# 3. Quantizing a model
# ---------------------------------------------------------------------------

SCHEMES: dict[str, str] = {
    "fp32": "no change: float32 weights (the baseline)",
    "fp16": "every floating parameter and buffer cast to float16",
    "bf16": "every floating parameter and buffer cast to bfloat16",
    "int8-absmax-tensor": "nn.Linear weights in int8, one absmax scale per matrix",
    "int8-absmax-row": "nn.Linear weights in int8, one absmax scale per output row",
    "int8-zeropoint-row": "nn.Linear weights in int8, a scale and zero point per output row",
}


class QuantizedLinear(nn.Module):
    """An ``nn.Linear`` whose weight is stored in int8 ("weight-only", W8A16).

    Buffers: ``weight_q`` (out_features, in_features) int8, ``weight_scale``
    float32 ((), or (out_features, 1) per row), ``weight_zero_point`` int32
    (zero-point method only). The bias stays in floating point. ``forward``
    dequantizes the weight to the input's dtype and calls ``F.linear``: memory
    for the weights drops about 4x versus fp32, while activations and the
    matmul stay in floating point (16-bit on a GPU, hence "A16"; fp32 on a
    CPU). Integer matmul kernels (W8A8) are a different, faster technique.

    Example: ``QuantizedLinear(nn.Linear(4, 2))(torch.randn(3, 4)).shape == (3, 2)``.
    """

    def __init__(self, linear: nn.Linear, method: str = "absmax", granularity: str = "row") -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if method not in ("absmax", "zeropoint"):
            raise ValueError(f"method must be 'absmax' or 'zeropoint', got {method!r}")
        if granularity not in ("tensor", "row"):
            raise ValueError(f"granularity must be 'tensor' or 'row', got {granularity!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.method, self.granularity = method, granularity
        weight = linear.weight.detach()  # (out_features, in_features)
        if method == "absmax":
            q, scale = absmax_quantize(weight, granularity)
            zero_point = None
        else:
            q, scale, zero_point = zeropoint_quantize(weight, granularity)
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point)  # None: not in the state_dict
        self.bias = linear.bias  # kept as the same float Parameter (or None)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as floats, (out_features, in_features)."""
        if self.weight_zero_point is None:
            return absmax_dequantize(self.weight_q, self.weight_scale, dtype)
        return zeropoint_dequantize(self.weight_q, self.weight_scale, self.weight_zero_point, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, method={self.method}, granularity={self.granularity}"
        )


def _check_scheme(scheme: Any) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")


def quantize_model(model: nn.Module, scheme: str) -> nn.Module:
    """A quantized deep copy of ``model``; the original is left untouched.

    Schemes (see ``SCHEMES``): "fp32" (a float32 copy), "fp16" and "bf16" (a
    cast of every floating parameter and buffer), and "int8-absmax-tensor",
    "int8-absmax-row", "int8-zeropoint-row" which replace every ``nn.Linear``
    (exactly that class, at any depth) by a ``QuantizedLinear``. Everything
    else (embeddings, LayerNorm, biases) stays float.

    Weight tying: a Linear whose weight Parameter is also used by another
    module (GPT's ``lm_head`` tied to the token embedding ``wte``) is kept as a
    float ``nn.Linear``, so the tie and the embedding survive; its memory is
    then not reduced. Subclasses of ``nn.Linear`` (e.g. the ``out_proj`` of
    ``nn.MultiheadAttention``, whose weight is read directly) are also kept.

    Example: ``quantize_model(nn.Sequential(nn.Linear(4, 4)), "int8-absmax-row")[0]``
    is a ``QuantizedLinear``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_scheme(scheme)
    new = copy.deepcopy(model)  # deepcopy keeps ties: shared Parameters stay shared
    if scheme in ("fp32", "fp16", "bf16"):
        return new.to({"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[scheme])

    _, method, granularity = scheme.split("-")
    # How many distinct modules hold each Parameter: more than one means tied.
    users: dict[int, int] = {}
    for module in new.modules():
        for p in module.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1

    replaced: dict[int, QuantizedLinear] = {}  # a Linear reused in two places stays one module
    for parent in list(new.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or users[id(child.weight)] > 1:
                continue
            if id(child) not in replaced:
                replaced[id(child)] = QuantizedLinear(child, method, granularity)
            setattr(parent, name, replaced[id(child)])
    return new


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers, each storage counted once.

    Tied weights share a storage and count once, as in ``torch.save``.
    Example: ``model_size_bytes(nn.Linear(10, 10)) == (100 + 10) * 4``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    seen: dict[tuple[str, int], int] = {}
    tensors = [*model.parameters(), *model.buffers()]  # distinct tensors; storages deduped below
    for t in tensors:
        storage = t.untyped_storage()
        seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


# ---------------------------------------------------------------------------
# 4. Size and perplexity of each scheme
# ---------------------------------------------------------------------------


@dataclass
class QuantizationResult:
    """One row of ``evaluate_quantization``."""

    scheme: str
    size_bytes: int
    size_ratio: float  # fp32 size / this size: 2 for fp16, close to 4 for int8
    perplexity: float  # exp(mean loss over the batches)
    perplexity_change: float  # relative: perplexity / fp32 perplexity - 1
    note: str = ""


def _dtype_problem(dtype: torch.dtype, device: torch.device) -> str:
    """'' if matmul and log-softmax run in ``dtype`` on ``device``, else why not."""
    try:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        torch.log_softmax(F.linear(a, a), dim=-1)
    except (RuntimeError, TypeError) as err:  # e.g. "not implemented for 'Half'"
        return f"{dtype} is not supported on {device.type} by this torch build: {err}"
    return ""


def _perplexity(model: nn.Module, batches: list, device: torch.device, dtype: torch.dtype,
                desc: str, progress: bool) -> float:
    """``exp(mean batch loss)`` with :func:`course_utils.training.evaluate`;
    float inputs are cast to the model's ``dtype`` first."""
    from .training import evaluate

    cast = [{k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in b.items()}
            for b in batches]
    return evaluate(model, tqdm(cast, desc=desc, disable=not progress, leave=False), device)[1]


def evaluate_quantization(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    schemes: Iterable[str] = tuple(SCHEMES),
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Table:
    """Size and perplexity of ``model`` under each quantization scheme.

    Each batch is a dict passed as ``model(**batch)``, which must return
    ``(logits, loss)`` (or an object with ``.loss``). Perplexity is
    ``exp(mean of the batch losses)``, computed under ``torch.no_grad()`` in
    eval mode. The fp32 row always comes first: it is the reference for
    ``size_ratio`` and ``perplexity_change``. When fp16/bf16 cannot run on the
    device, its perplexity is nan and ``note`` says why (its size is still
    exact). ``device`` defaults to the model's device.

    Example: ``evaluate_quantization(model, [batch], ["int8-absmax-row"])``
    -> rows for fp32 and int8-absmax-row.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    schemes = list(schemes)
    for scheme in schemes:
        _check_scheme(scheme)
    batches = list(batches)  # reused once per scheme
    if not batches:
        raise ValueError("batches must hold at least one batch, got none")
    for batch in batches:
        if not isinstance(batch, Mapping):
            raise TypeError(f"each batch must be a dict for model(**batch), got {type(batch).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    rows = Table()
    base_size = base_ppl = None
    for scheme in ["fp32"] + [s for s in schemes if s != "fp32"]:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(scheme, torch.float32)
        qmodel = quantize_model(model, scheme).to(device).eval()
        size = model_size_bytes(qmodel)
        note = _dtype_problem(dtype, device)
        ppl = math.nan if note else _perplexity(qmodel, batches, device, dtype, scheme, progress)
        if scheme == "fp32":
            base_size, base_ppl = size, ppl
        rows.append(QuantizationResult(scheme, size, base_size / size, ppl, ppl / base_ppl - 1, note))
        del qmodel
    return rows
