"""The shipped reference models: small, loadable, and as good as their cards say.

The cards' numbers were written by `python -m course_utils.pretrain NAME`;
here they are measured again from the shipped weights.
"""

import math
import re
from pathlib import Path

import pytest
import torch

from course_utils import pretrain, pretrained

NAMES = ["facts", "icl", "prose"]
CARD_KEYS = {"name", "description", "command", "config", "parameters", "data", "train_config", "steps", "seed",
             "validation_loss", "metrics", "history"}


def test_all_reference_models_are_shipped():
    assert pretrained.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_card_and_files(name):
    card = pretrained.card(name)
    assert CARD_KEYS <= set(card)
    assert card["command"] == f"python -m course_utils.pretrain {name}"
    folder = Path(pretrained.__file__).parent / name
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 10 * 2**20, f"{name} takes {size / 2**20:.1f} MiB, more than 10 MiB"
    ref = pretrained.load(name)
    assert ref.model.num_parameters() == card["parameters"]
    assert not ref.model.training
    assert ref.model.lm_head.weight is ref.model.wte.weight  # tying survives loading


@pytest.mark.parametrize("name", ["facts", "icl"])
def test_validation_loss_reproduces(name):
    ref = pretrained.load(name)
    parts = pretrain.RECIPES[name].build(progress=False)
    from course_utils.training import evaluate

    loss, _ = evaluate(ref.model, parts["val_batches"], max_batches=50, seed=123)
    assert abs(loss - ref.card["validation_loss"]) < 1e-3 * max(1.0, loss)


def test_prose_tokenizer_and_loss_reproduce():
    ref = pretrained.load("prose")
    parts = pretrain.RECIPES["prose"].build(progress=False)
    assert parts["tokenizer"].merges == ref.tokenizer.merges  # the BPE training is deterministic
    from course_utils.training import evaluate

    loss, _ = evaluate(ref.model, parts["val_batches"], max_batches=50, seed=123)
    assert abs(loss - ref.card["validation_loss"]) < 1e-3 * loss
    assert loss < math.log(ref.model.config.vocab_size) - 2  # far better than uniform


def test_icl_accuracy_rises_with_shots_and_matches_the_card():
    ref = pretrained.load("icl")
    measured = pretrain._icl_accuracy(ref.model)
    card = ref.card["metrics"]["accuracy_by_shots"]
    for k, acc in measured.items():
        assert abs(acc - card[k]) <= 0.01, (k, acc, card[k])
    assert measured["0"] < measured["1"] < measured["4"]
    assert measured["4"] >= 0.9 and measured["0"] <= 0.5


def test_facts_model_answers_its_questions():
    ref = pretrained.load("facts")
    assert ref.complete("Q: Which planet does Ganymede orbit? A:", max_new_tokens=1) == "Jupiter"
    _, train_q, held_q = pretrain._facts_split()
    acc = pretrain._qa_accuracy(ref.model, ref.tokenizer, train_q)
    assert abs(acc - ref.card["metrics"]["qa_accuracy_train_questions"]) <= 0.01
    assert acc >= 0.9


def test_prose_samples_look_like_english_words():
    ref = pretrained.load("prose")
    from course_utils.data import prose_text

    vocabulary = set(re.findall(r"[a-z]+", prose_text("train").lower()))
    text = ref.complete("The", max_new_tokens=200, do_sample=True, temperature=0.8,
                        generator=torch.Generator().manual_seed(0))
    words = re.findall(r"[a-z]+", text.lower())
    assert len(words) >= 50
    known = sum(w in vocabulary for w in words) / len(words)
    assert known >= 0.8, f"only {known:.0%} of sampled words are English words from the corpus: {text[:200]!r}"


def test_recipe_runs_end_to_end(tmp_path):
    card = pretrain.pretrain("facts", out_dir=tmp_path, steps=5, progress=False)
    assert card["steps"] == 5 and (tmp_path / "model.safetensors").is_file()
    assert pretrained.load(str(tmp_path)).model.num_parameters() == card["parameters"]


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="name must be one of"):
        pretrained.load("gpt-5")
    with pytest.raises(ValueError, match="name must be one of"):
        pretrain.pretrain("gpt-5")
