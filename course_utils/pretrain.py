"""Recipes for the small reference models shipped with the course.

Each recipe builds its tokenizer and data offline, trains a
:class:`~course_utils.transformer.DecoderOnlyLM` with
:func:`course_utils.training.train`, measures it, and writes three files to
``course_utils/pretrained/<name>/``: ``model.safetensors``, ``tokenizer.json``
and ``card.json`` (data, steps, seed, parameters, validation loss and the
task metrics, all measured by the run). Reproduce a model with::

    python -m course_utils.pretrain prose      # English prose, for the sampling chapter
    python -m course_utils.pretrain icl        # in-context learning tasks
    python -m course_utils.pretrain facts      # the facts world (moons, planets, people, places)

Training is seeded; on the same machine and library versions a re-run gives
the same numbers, and elsewhere they agree within noise.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .checks import check_int
from .device import evaluating
from .training import TrainConfig, evaluate, train
from .transformer import DecoderOnlyLM, TransformerConfig

__all__ = ["RECIPES", "pretrain", "PRETRAINED_DIR", "pad_batch"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


@dataclass
class Recipe:
    name: str
    description: str
    build: Callable[..., dict]


def pad_batch(sequences: list[list[int]], labels: list[list[int]] | None, pad_id: int,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token lists into ``{"input_ids", "labels"}`` tensors ``(B, T_max)``
    with :class:`course_utils.data.CausalLMCollator`. Labels default to the
    inputs; padding gets label -100. No ``attention_mask``: the causal mask
    already keeps padding on the right from affecting real tokens."""
    from .data import CausalLMCollator

    examples = sequences if labels is None else [{"input_ids": s, "labels": lab} for s, lab in zip(sequences, labels)]
    batch = CausalLMCollator(pad_id, device=device)(examples)
    return {"input_ids": batch["input_ids"], "labels": batch["labels"]}


def _sampler(rows: list, batch_size: int, make: Callable[[list], dict]) -> Callable:
    """``get_batch(split, generator)`` drawing ``batch_size`` random rows."""
    def get_batch(split: str = "train", generator: torch.Generator | None = None) -> dict:
        idx = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
        return make([rows[i] for i in idx])
    return get_batch


# ----------------------------------------------------------------------------- prose


def _prose(progress: bool) -> dict:
    from .data import prose_text, random_batch
    from .tokenization import BPETokenizer

    train_text, val_text = prose_text("train", progress=progress), prose_text("validation", progress=progress)
    tok = BPETokenizer().train(train_text, vocab_size=2048, special_tokens=["<|endoftext|>"], progress=progress)
    eot = tok.special_tokens["<|endoftext|>"]
    encode = lambda text: [i for para in text.split("\n\n") for i in tok.encode(para) + [eot]]
    train_ids, val_ids = torch.tensor(encode(train_text)), torch.tensor(encode(val_text))
    config = TransformerConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128,
                               dropout=0.1, activation="gelu_tanh", pad_token_id=eot)
    tc = TrainConfig(max_steps=1000, lr=2e-3, warmup_steps=50, weight_decay=0.1, grad_clip=1.0,
                     eval_every=100, eval_batches=20, log_every=20, seed=1337, device="cpu", progress=progress)
    batch = lambda data: (lambda split="train", generator=None: random_batch(data, 128, 32, generator=generator))
    return dict(tokenizer=tok, config=config, train_config=tc, train_batches=batch(train_ids),
                val_batches=batch(val_ids),
                data=dict(source="course_utils.data.prose_text: Python's pydoc topics and stdlib docstrings",
                          train_tokens=len(train_ids), validation_tokens=len(val_ids),
                          tokenizer="byte-level BPE, 2048 tokens incl. <|endoftext|>, trained on the train split"),
                metrics=lambda model: {})


# ----------------------------------------------------------------------------- in-context learning


def _icl_accuracy(model: DecoderOnlyLM, ks=range(9), n_per_k: int = 500, seed: int = 1) -> dict[str, float]:
    """Greedy accuracy of the answer token, by number of shots, on held-out prompts."""
    from .data import icl_eval_sets

    sets = icl_eval_sets(ks=list(ks), n_per_k=n_per_k, seed=seed)
    out = {}
    with evaluating(model), torch.no_grad():
        for k, ds in sets.items():
            prompts, targets = list(ds["prompt_ids"]), list(ds["target"])
            correct = 0
            for start in range(0, len(prompts), 250):
                chunk = prompts[start:start + 250]
                batch = pad_batch(chunk, None, pad_id=model.config.pad_token_id)["input_ids"]
                logits = model(batch)[0]  # (B, T, V)
                last = torch.tensor([len(p) - 1 for p in chunk])
                pred = logits[torch.arange(len(chunk)), last].argmax(-1)
                correct += int((pred == torch.tensor(targets[start:start + 250])).sum())
            out[str(k)] = correct / len(prompts)
    return out


def _icl(progress: bool) -> dict:
    from .data import ICLTokenizer, icl_tasks

    tok = ICLTokenizer()
    pad = tok.pad_id
    train_rows = icl_tasks(60_000, seed=0, split="train")
    val_rows = icl_tasks(2_000, seed=1, split="eval")
    rows = lambda ds: list(zip(ds["input_ids"], ds["labels"]))
    make = lambda chunk: pad_batch([r[0] for r in chunk], [r[1] for r in chunk], pad_id=pad)
    config = TransformerConfig(vocab_size=tok.vocab_size, block_size=48,
                               n_layer=3, n_head=4, n_embd=96, activation="gelu_tanh", pad_token_id=pad)
    tc = TrainConfig(max_steps=1500, lr=1e-3, warmup_steps=100, weight_decay=0.1, grad_clip=1.0,
                     eval_every=250, eval_batches=10, log_every=25, seed=1337, device="cpu", progress=progress)
    return dict(tokenizer=tok, config=config, train_config=tc, train_batches=_sampler(rows(train_rows), 128, make),
                val_batches=_sampler(rows(val_rows), 128, make),
                data=dict(source="course_utils.data.icl_tasks: six mappings on 20 symbols, 0 to 8 examples, "
                                 "loss on every answer", train_sequences=len(train_rows),
                          held_out="prompts of the eval split (a fixed hash puts 20 % of prompts there)"),
                metrics=lambda model: {"accuracy_by_shots": _icl_accuracy(model)})


# ----------------------------------------------------------------------------- facts world


def _facts_split(seed: int = 0, held_out: float = 0.2):
    """Questions split into train and held-out; every fact is stated in the corpus."""
    from .data import facts_corpus, facts_questions

    sentences = list(facts_corpus(seed=seed)["text"])
    questions = facts_questions(seed=seed)
    rows = list(zip(questions["prompt"], questions["answer"], questions["question"]))
    rng = random.Random(seed)
    rng.shuffle(rows)
    cut = int(len(rows) * held_out)
    return sentences, rows[cut:], rows[:cut]


def _qa_accuracy(model: DecoderOnlyLM, tok, rows) -> float:
    correct = 0
    for prompt, answer, _ in rows:
        ids = torch.tensor([tok.encode(prompt)])
        n = len(tok.encode(answer))
        out = model.generate(ids, n)[0, ids.shape[1]:].tolist()
        correct += tok.decode(out) == tok.decode(tok.encode(answer))
    return correct / len(rows)


def _facts(progress: bool) -> dict:
    from .tokenization import WordTokenizer

    sentences, train_q, held_q = _facts_split()
    docs = sentences + [f"{p} {a}" for p, a, _ in train_q]
    tok = WordTokenizer("\n".join(sentences + [f"{p} {a}" for p, a, _ in train_q + held_q]))
    pad = 0  # <unk>, never a label: padding is masked out of the loss
    encoded = [tok.encode(d) for d in docs]
    make = lambda chunk: pad_batch(chunk, None, pad_id=pad)
    config = TransformerConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=4, n_head=4, n_embd=128,
                               activation="gelu_tanh", pad_token_id=pad)
    tc = TrainConfig(max_steps=1500, lr=2e-3, warmup_steps=100, weight_decay=0.0, grad_clip=1.0,
                     eval_every=250, eval_batches=8, log_every=25, seed=1337, device="cpu", progress=progress)
    held_docs = [tok.encode(f"{p} {a}") for p, a, _ in held_q]
    return dict(tokenizer=tok, config=config, train_config=tc, train_batches=_sampler(encoded, 32, make),
                val_batches=_sampler(held_docs, 32, make),
                data=dict(source="course_utils.data.facts_corpus and facts_questions (seed 0)",
                          sentences=len(sentences), train_questions=len(train_q), held_out_questions=len(held_q),
                          note="every fact is stated in the sentences; held-out questions are never seen as Q/A"),
                metrics=lambda model: {"qa_accuracy_train_questions": _qa_accuracy(model, tok, train_q),
                                       "qa_accuracy_held_out_questions": _qa_accuracy(model, tok, held_q)})


RECIPES = {
    "prose": Recipe("prose", "A small GPT on English prose shipped with Python; its samples look like English.", _prose),
    "icl": Recipe("icl", "A small GPT trained on in-context-learning tasks: few-shot beats zero-shot.", _icl),
    "facts": Recipe("facts", "A small GPT trained on a world of facts; it answers questions such as "
                             "'Which planet does Ganymede orbit?'.", _facts),
}


def _save_tokenizer(tok, path: Path) -> None:
    if hasattr(tok, "save"):
        tok.save(path)
    else:  # the fixed ICL vocabulary: rebuilt from course_utils.data, recorded for reference
        path.write_text(json.dumps({"type": type(tok).__name__, "module": type(tok).__module__}, indent=2))


def pretrain(name: str, out_dir: str | Path | None = None, steps: int | None = None,
             progress: bool = True) -> dict:
    """Train reference model ``name`` and write it to ``out_dir`` (default:
    the package's ``pretrained/<name>/``). Returns the card (a dict)."""
    from safetensors.torch import save_model

    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    torch.manual_seed(0)
    t0 = time.time()
    parts = recipe.build(progress)
    if steps is not None:  # a shorter run of the same recipe (for smoke tests)
        check_int("steps", steps, minimum=1)
        tc = parts["train_config"]
        parts["train_config"] = replace(tc, max_steps=steps, warmup_steps=min(tc.warmup_steps, steps // 5),
                                        eval_every=min(tc.eval_every, steps))
    model = DecoderOnlyLM(parts["config"])
    history = train(model, parts["train_batches"], parts["train_config"], val_batches=parts["val_batches"])
    val_loss, val_ppl = evaluate(model, parts["val_batches"], max_batches=50, seed=123)
    metrics = parts["metrics"](model)
    seconds = time.time() - t0
    out = Path(out_dir) if out_dir else PRETRAINED_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_model(model, str(out / "model.safetensors"))
    _save_tokenizer(parts["tokenizer"], out / "tokenizer.json")
    card = {
        "name": name,
        "description": recipe.description,
        "command": f"python -m course_utils.pretrain {name}" + (f" --steps {steps}" if steps else ""),
        "model": "DecoderOnlyLM",
        "config": parts["config"].to_dict(),
        "parameters": model.num_parameters(),
        "data": parts["data"],
        "train_config": parts["train_config"].to_dict(),
        "steps": parts["train_config"].max_steps,
        "seed": parts["train_config"].seed,
        "validation_loss": round(val_loss, 4),
        "validation_perplexity": round(val_ppl, 3),
        "validation": "mean loss over 50 validation batches drawn with seed 123",
        "metrics": metrics,
        "history": {k: [round(x, 4) if isinstance(x, float) else x for x in v]
                    for k, v in history.as_dict().items() if k in ("step", "train_loss", "val_step", "val_loss")},
        "trained_on": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "training_seconds": round(seconds, 1),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_utils.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    ap.add_argument("--out", default=None, help="write here instead of the package's pretrained/ folder")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    card = pretrain(args.name, args.out, args.steps, progress=not args.no_progress)
    print(json.dumps({k: card[k] for k in ("name", "parameters", "steps", "validation_loss", "metrics",
                                           "training_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
