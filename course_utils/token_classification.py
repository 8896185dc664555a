"""Token classification with an encoder: named-entity recognition (NER).

An encoder-only model gives one contextual vector per input token; a linear
layer on top of each vector scores the labels of that token. That is how BERT
was fine-tuned for CoNLL-2003 NER (Devlin et al., 2019, section 5.3; data of
Tjong Kim Sang & De Meulder, 2003): the labels are BIO tags (``B-PER`` begins
a person's name, ``I-PER`` continues it, ``O`` is outside any name), and a word
cut into several subword tokens is classified by its *first* token; the other
tokens of the word get the label ``-100``, which the loss skips.

* :class:`TokenClassifier`: an :class:`~course_utils.transformer.EncoderOnlyLM`'s
  contextual vectors (its ``encode``) and a linear head. Same calling
  convention as the language models, so :func:`course_utils.training.train`
  fine-tunes it.
* :func:`align_labels` and :class:`NERCollator`: words and word tags to padded
  token ids and token labels.
* :func:`predict_tags`: a trained classifier's tags, one per word.
* :func:`entity_spans` and :func:`entity_scores`: entity-level precision,
  recall and F1 per entity type, as the CoNLL shared task's ``conlleval``
  script scores them: an entity counts as found only if its type and both of
  its boundaries are right.
* :class:`MostFrequentTag`: the baseline, a lexicon that tags each word with
  the tag it had most often in training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import evaluating
from .transformer import IGNORE_INDEX, EncoderOnlyLM

__all__ = ["TokenClassifier", "align_labels", "NERCollator", "predict_tags", "entity_spans", "entity_scores",
           "MostFrequentTag"]


class TokenClassifier(nn.Module):
    """An encoder and a linear head: ``input_ids`` ``(B, T)`` -> label scores ``(B, T, num_labels)``.

    The head reads the encoder's contextual vectors (``encoder.encode``), not
    its masked-LM head, which is kept but unused, so a pre-trained encoder can
    be passed in as it is.
    """

    def __init__(self, encoder: EncoderOnlyLM, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if not isinstance(encoder, EncoderOnlyLM):
            raise TypeError(f"encoder must be an EncoderOnlyLM, got {type(encoder).__name__}")
        if not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
        self.encoder = encoder
        self.config = encoder.config
        self.num_labels = num_labels
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.n_embd, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)  # as BERT's heads
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores ``(B, T, num_labels)`` and, given ``labels`` ``(B, T)`` (-100 skipped), their mean cross-entropy."""
        h = self.encoder.encode(input_ids, attention_mask)  # (B, T, C)
        logits = self.classifier(self.drop(h))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss


def _word_pieces(words: Sequence[str], text: str | None) -> list[str]:
    """The text of each word with the whitespace before it: ``["Io", "orbits"]`` -> ``["Io", " orbits"]``.

    Without ``text`` the words are joined by single spaces.
    """
    if text is None:
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    pieces, pos = [], 0
    for w in words:
        at = text.find(w, pos)
        if at < 0 or text[pos:at].strip():
            raise ValueError(f"word {w!r} is not the next word of the text {text!r} after position {pos}")
        pieces.append(text[pos:at + len(w)])
        pos = at + len(w)
    return pieces


def align_labels(tokenizer: Any, words: Sequence[str], tags: Sequence[int] | None = None,
                 text: str | None = None) -> dict[str, list[int]]:
    """Tokenize a sentence word by word and put each word's tag on its first token.

    Each word is encoded with the whitespace before it (taken from ``text``, or
    one space between words), so a byte-level BPE sees ``" Jupiter"`` as it
    would inside the sentence. Returns ``input_ids``, ``labels`` (the word's tag
    on its first token, -100 on the others; all -100 without ``tags``) and
    ``word_ids`` (the word each token belongs to).
    Example with a tokenizer that cuts "Ganymede" into "Gan" + "ymede":
    words ``["Ganymede", "orbits"]``, tags ``[5, 0]`` -> tokens ``Gan, ymede, _orbits``,
    labels ``[5, -100, 0]``, word_ids ``[0, 0, 1]``.
    """
    if tags is not None and len(tags) != len(words):
        raise ValueError(f"tags must have one entry per word ({len(words)}), got {len(tags)}")
    ids, labels, word_ids = [], [], []
    for i, piece in enumerate(_word_pieces(words, text)):
        token_ids = tokenizer.encode(piece)
        if not token_ids:
            raise ValueError(f"word {words[i]!r} encodes to no tokens")
        ids += token_ids
        word_ids += [i] * len(token_ids)
        first = IGNORE_INDEX if tags is None else int(tags[i])
        labels += [first] + [IGNORE_INDEX] * (len(token_ids) - 1)
    return {"input_ids": ids, "labels": labels, "word_ids": word_ids}


class NERCollator:
    """Pad aligned examples (dicts from :func:`align_labels`) into a batch.

    Output: ``input_ids`` ``(B, T)`` padded with ``pad_token_id``, ``labels``
    ``(B, T)`` padded with -100 (all -100 for an example without labels), ``attention_mask`` ``(B, T)`` (1 = real token).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("examples must be a non-empty list of dicts from align_labels")
        T = max(len(ex["input_ids"]) for ex in examples)
        B = len(examples)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        for b, ex in enumerate(examples):
            n = len(ex["input_ids"])
            input_ids[b, :n] = torch.tensor(ex["input_ids"])
            if ex.get("labels") is not None:
                labels[b, :n] = torch.tensor(ex["labels"])
            attention_mask[b, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@torch.no_grad()
def predict_tags(model: TokenClassifier, examples: Sequence[dict], pad_token_id: int,
                 batch_size: int = 256) -> list[list[int]]:
    """The tag id of each word: the best label of the word's first token.

    ``examples``: dicts from :func:`align_labels` (their labels are not used).
    Returns one list of tag ids per example, one per word.
    """
    collate = NERCollator(pad_token_id)
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate(chunk)
            logits, _ = model(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            best = logits.argmax(-1).cpu()  # (B, T)
            for b, ex in enumerate(chunk):
                tags, seen = [], set()
                for t, w in enumerate(ex["word_ids"]):
                    if w not in seen:  # the first token of word w
                        seen.add(w)
                        tags.append(int(best[b, t]))
                out.append(tags)
    return out


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one BIO-tagged sentence as ``(type, first word, last word + 1)``.

    As CoNLL's ``conlleval``: ``B-X`` starts an entity; ``I-X`` continues an
    entity of type X, and starts one if the previous tag is ``O`` or of another
    type. Example: ``["B-PER", "I-PER", "O", "I-LOC"]`` -> ``{("PER", 0, 2), ("LOC", 3, 4)}``.
    """
    spans, kind, start = set(), None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-")
        if prefix not in ("B", "I", "O") or (prefix != "O" and not typ):
            raise ValueError(f"tags must be BIO strings such as 'O', 'B-PER', 'I-PER', got {tag!r}")
        continues = prefix == "I" and typ == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = typ, i
    return spans


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, dict]:
    """Entity-level precision, recall and F1 per entity type, and over all types (``"all"``).

    An entity counts as found only if a predicted entity has the same type
    and the same first and last word. Each value is a dict with
    ``precision``, ``recall``, ``f1``, ``support`` (true entities),
    ``predicted`` and ``correct``; a ratio with nothing to divide by is 0.
    Example: true ``[["B-PER", "I-PER", "O"]]``, predicted ``[["B-PER", "O", "O"]]``
    -> PER: precision 0, recall 0 (the boundary is wrong), F1 0.
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"true_tags and pred_tags must hold as many sentences, got {len(true_tags)} "
                         f"and {len(pred_tags)}")
    counts: dict[str, Counter] = defaultdict(Counter)
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted")
        true, pred = entity_spans(t), entity_spans(p)
        for kind, *_ in true:
            counts[kind]["support"] += 1
        for kind, *_ in pred:
            counts[kind]["predicted"] += 1
        for kind, *_ in true & pred:
            counts[kind]["correct"] += 1
    counts["all"] = sum(counts.values(), Counter())
    scores = {}
    for kind in sorted(k for k in counts if k != "all") + ["all"]:
        c = counts[kind]
        precision = c["correct"] / c["predicted"] if c["predicted"] else 0.0
        recall = c["correct"] / c["support"] if c["support"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[kind] = {"precision": precision, "recall": recall, "f1": f1, "support": c["support"],
                        "predicted": c["predicted"], "correct": c["correct"]}
    return scores


class MostFrequentTag:
    """The lexicon baseline: each word gets the tag it had most often in training, unknown words ``default``.

    Ties go to the tag seen first. Example: trained on ``[["Io", "orbits", "Jupiter"]]`` with
    ``[["B-ASTRO", "O", "B-ASTRO"]]``, it tags ``["Jupiter", "orbits", "Saturn"]`` as
    ``["B-ASTRO", "O", "O"]``.
    """

    def __init__(self, default: str = "O") -> None:
        self.default = default
        self.lexicon: dict[str, str] = {}

    def fit(self, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> "MostFrequentTag":
        counts: dict[str, Counter] = defaultdict(Counter)
        for words, word_tags in zip(sentences, tags, strict=True):
            for w, t in zip(words, word_tags, strict=True):
                counts[w][t] += 1
        self.lexicon = {w: c.most_common(1)[0][0] for w, c in counts.items()}
        return self

    def predict(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        return [[self.lexicon.get(w, self.default) for w in words] for words in sentences]
