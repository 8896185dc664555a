"""The small reference models shipped with the course.

Each lives in ``course_utils/pretrained/<name>/`` as ``model.safetensors``,
``tokenizer.json`` and ``card.json`` (what it was trained on, for how long, and
what it scores), and was made by ``python -m course_utils.pretrain <name>``.

>>> from course_utils import pretrained
>>> ref = pretrained.load("facts")
>>> ref.complete("Q: Which planet does Ganymede orbit? A:", max_new_tokens=1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "load", "Pretrained", "card"]

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped models, e.g. ``['facts', 'icl', 'prose']``."""
    return sorted(p.name for p in HERE.iterdir() if (p / "card.json").is_file())


def _folder(name: str) -> Path:
    path = Path(name)
    if (path / "card.json").is_file():  # a folder written by `python -m course_utils.pretrain NAME --out DIR`
        return path
    names = available()
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    return HERE / name


def card(name: str) -> dict:
    """The model card of ``name``: data, steps, seed, parameters, validation loss, metrics."""
    return json.loads((_folder(name) / "card.json").read_text())


def _tokenizer(folder: Path) -> Any:
    state = json.loads((folder / "tokenizer.json").read_text())
    if state.get("type") == "ICLTokenizer":
        from ..data import ICLTokenizer

        return ICLTokenizer()
    from ..tokenization import Tokenizer

    return Tokenizer.load(folder / "tokenizer.json")


@dataclass
class Pretrained:
    """A loaded reference model with its tokenizer and card."""

    name: str
    model: Any  # DecoderOnlyLM
    tokenizer: Any
    card: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` as a ``(1, T)`` tensor on the model's device."""
        return torch.tensor([self.tokenizer.encode(text)], device=self.device)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids.tolist() if isinstance(ids, torch.Tensor) else list(ids))

    def complete(self, prompt: str, max_new_tokens: int = 20, **generate_kwargs: Any) -> str:
        """The text the model writes after ``prompt`` (greedy unless
        ``do_sample=True``; see ``DecoderOnlyLM.generate`` for the settings)."""
        ids = self.encode(prompt)
        out = self.model.generate(ids, max_new_tokens, **generate_kwargs)
        return self.decode(out[0, ids.shape[1]:])


def load(name: str, device: str | torch.device | None = "cpu") -> Pretrained:
    """Load reference model ``name`` (see :func:`available`), or the model in
    folder ``name``, in eval mode on ``device``."""
    from safetensors.torch import load_model

    from ..transformer import DecoderOnlyLM, TransformerConfig

    folder = _folder(name)
    info = card(name)
    model = DecoderOnlyLM(TransformerConfig.from_dict(info["config"]))
    load_model(model, str(folder / "model.safetensors"), device="cpu")
    model = model.to(device if device is not None else "cpu").eval()
    return Pretrained(name=info["name"], model=model, tokenizer=_tokenizer(folder), card=info)
