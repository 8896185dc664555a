"""Tests for course_utils.data: corpora, synthetic tasks, batching and collators.

References: hand-worked examples (the T5 paper's span-corruption example,
hand-translated sentences, hand-tagged NER sentences, a hand-cleaned reST
text), real astronomy and geography, Python's own ``pydoc_data`` text, the
prose snapshot's recorded SHA-256, and Hugging Face's
``DataCollatorForLanguageModeling`` run on the same inputs with a tiny local
tokenizer. Random code is checked with rates within a few standard deviations.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pytest
import torch

from course_utils import data as D
from course_utils.data import hub as H
from course_utils.data import prose as P
from course_utils.data.prose_cleaning import prose_paragraphs


# ---------------------------------------------------------------------------
# The package: one import path for every public name
# ---------------------------------------------------------------------------

PUBLIC_NAMES = [  # course_utils.data.__all__ when it was one module; chapters, labs and tests import these
    "load_prose", "prose_text", "Fact", "facts_world", "facts_corpus", "facts_questions", "ner_dataset",
    "NER_LABELS", "associative_recall", "copy_task", "ICL_TASKS", "ICLTokenizer", "icl_tasks", "icl_eval_sets",
    "translate", "translation_pairs", "causal_lm_blocks", "random_batch", "CausalLMCollator", "MaskedLMCollator",
    "random_spans_noise_mask", "span_corrupt", "SpanCorruptionCollator", "load_hub_dataset",
]


def test_public_names_are_unchanged_and_come_from_their_modules():
    import importlib

    assert D.__all__ == PUBLIC_NAMES
    namespace: dict = {}
    exec("from course_utils.data import *", namespace)
    homes = {name: module for module in ("prose", "facts", "tasks", "batching", "hub")
             for name in importlib.import_module(f"course_utils.data.{module}").__all__}
    for name in PUBLIC_NAMES:
        module = importlib.import_module(f"course_utils.data.{homes[name]}")
        assert getattr(D, name) is getattr(module, name) is namespace[name], name
    assert set(PUBLIC_NAMES) <= set(dir(D))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        D.nonexistent


def test_importing_the_package_loads_no_module_yet():
    code = ("import sys, course_utils.data\n"
            "print(sorted(m for m in sys.modules if m.startswith('course_utils.data.') or m == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# Prose
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prose():
    return D.load_prose(progress=False)


def test_pydoc_topics_exist():
    from pydoc_data.topics import topics

    assert isinstance(topics, dict) and "while" in topics and len(topics) > 50


def test_prose_splits_and_size(prose):
    train, val = prose["train"], prose["validation"]
    assert set(prose) == {"train", "validation"} and train.column_names == ["text", "source"]
    n = len(train) + len(val)
    assert len(val) == round(0.1 * n)
    assert not set(train["text"]) & set(val["text"])
    everything = D.prose_text(None, progress=False)
    assert len(everything) > 500_000 and len(everything.split()) > 80_000  # about 0.9 MB
    assert D.prose_text("train", progress=False) == "\n\n".join(train["text"])
    assert D.prose_text("validation", progress=False) == "\n\n".join(val["text"])


def test_prose_is_cleaned_prose(prose):
    from pydoc_data.topics import topics

    texts = list(prose["train"]["text"]) + list(prose["validation"]["text"])
    # The first paragraph of help("while"), its line breaks collapsed, survives intact ...
    raw = topics["while"].split("\n\n")[1]
    assert raw.startswith('The "while" statement is used')
    assert " ".join(raw.split()) in texts
    # ... and the grammar rule after it does not.
    assert "while_stmt" in topics["while"] and not any("while_stmt" in t for t in texts)
    for t in texts:
        assert ">>>" not in t and "::=" not in t and "\n" not in t and "  " not in t
        assert not re.search(r"(?<![\"\w*])\*\w[^*]*\*(?![\w*\"])", t), t  # reST *emphasis* removed
        assert not re.fullmatch(r"[*=\-~^]+", t)
        assert len(t.split()) >= 6
        letters = sum(c.isalpha() for c in t)
        assert letters >= 0.75 * len(t.replace(" ", "")), t  # not symbol-heavy


def test_prose_split_is_deterministic_given_seed(prose):
    again = D.load_prose("validation", seed=0, progress=False)
    assert list(again["text"]) == list(prose["validation"]["text"])
    other = D.load_prose("validation", seed=1, progress=False)
    assert list(other["text"]) != list(prose["validation"]["text"])
    assert len(D.load_prose("validation", validation_fraction=0.2, progress=False)) == pytest.approx(
        2 * len(prose["validation"]), abs=1)


def test_prose_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        D.load_prose("test", progress=False)
    with pytest.raises(ValueError, match="validation_fraction"):
        D.load_prose(validation_fraction=1.5, progress=False)


def test_cleaning_a_hand_written_rest_text():
    text = (
        "Heading\n=======\n\n"
        "The *while* statement is used for repeated execution as long as an\n"
        "expression is true:\n\n"
        "   while_stmt ::= \"while\" assignment_expression \":\" suite\n\n"
        ">>> x = 1\n\n"
        "A paragraph with ``literal`` text, :func:`len`, a quote-\n"
        "delimited word and \u201ctypographic\u201d quotes [1].\n\n"
        "* A bullet item that is long enough to be kept.\n\n"
        "Too short to keep.\n\n"
        "x = y + 1 if a else b * c; z(q) and some more words here.\n"
    )
    assert prose_paragraphs(text) == [
        "The while statement is used for repeated execution as long as an expression is true:",
        'A paragraph with literal text, len, a quote-delimited word and "typographic" quotes.',
        "A bullet item that is long enough to be kept.",
    ]


# ---------------------------------------------------------------------------
# The prose snapshot: frozen from one Python, the same corpus on every Python
# ---------------------------------------------------------------------------

def _provenance(directory: Path = P.SNAPSHOT_DIR) -> dict:
    return json.loads((Path(directory) / P.PROVENANCE_NAME).read_text(encoding="utf-8"))


def _snapshot_rows(directory: Path = P.SNAPSHOT_DIR) -> list[dict]:
    """The snapshot's JSON lines, decoded here without the module's reader."""
    payload = gzip.decompress((Path(directory) / P.SNAPSHOT_NAME).read_bytes())
    return [json.loads(line) for line in payload.decode("utf-8").splitlines()]


def test_snapshot_matches_its_recorded_provenance():
    provenance = _provenance()
    compressed = (P.SNAPSHOT_DIR / P.SNAPSHOT_NAME).read_bytes()
    assert hashlib.sha256(gzip.decompress(compressed)).hexdigest() == provenance["sha256_uncompressed"]
    assert hashlib.sha256(compressed).hexdigest() == provenance["sha256_file"]
    assert compressed[:2] == b"\x1f\x8b" and compressed[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    rows = _snapshot_rows()
    assert all(list(row) == ["source", "text"] for row in rows)
    assert len(rows) == provenance["paragraphs"] and len({row["text"] for row in rows}) == len(rows)
    assert sum(len(row["text"].split()) for row in rows) == provenance["words"]
    assert sum(len(row["text"]) for row in rows) == provenance["characters"]
    # The shipped `prose` model was trained on the corpus of CPython 3.11.7: a snapshot of another
    # Python is another corpus, and needs `python -m course_utils.pretrain prose` (and this line) to change.
    assert (provenance["python"]["implementation"], provenance["python"]["version"]) == ("CPython", "3.11.7")
    assert provenance["command"] == "python -m course_utils.data.prose --freeze"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", provenance["date"])
    assert provenance["sources"]["stdlib_docstrings"] == sorted(provenance["sources"]["stdlib_docstrings"])
    sources = {row["source"] for row in rows}
    assert {f"doc:{f}" for f in provenance["sources"]["stdlib_docstrings"]} >= sources - {
        s for s in sources if s.startswith("pydoc:")}
    notice = (P.SNAPSHOT_DIR / P.LICENSE_NAME).read_text(encoding="utf-8")
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in notice and "Python Software Foundation" in notice


def test_loading_reads_only_the_snapshot_never_the_running_python(prose, monkeypatch):
    """Whatever the interpreter, the corpus is the snapshot's: its own documentation is never read."""
    rows = _snapshot_rows()

    def refuse(*args, **kwargs):
        raise AssertionError("the prose loader read the running Python's documentation")

    monkeypatch.setattr(P, "_PROSE", None)  # forget the cached corpus
    monkeypatch.setitem(sys.modules, "pydoc_data", None)  # any import of it fails
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    monkeypatch.setattr(sysconfig, "get_paths", refuse)
    assert D.prose_text(None, progress=False) == "\n\n".join(row["text"] for row in rows)
    again = D.load_prose(progress=False)
    pairs = []
    for split in ("train", "validation"):
        text, source = list(again[split]["text"]), list(again[split]["source"])
        assert text == list(prose[split]["text"]) and source == list(prose[split]["source"])
        pairs += zip(source, text)
    assert sorted(pairs) == sorted((row["source"], row["text"]) for row in rows)


def test_a_changed_snapshot_is_refused(tmp_path):
    for name in (P.SNAPSHOT_NAME, P.PROVENANCE_NAME):
        (tmp_path / name).write_bytes((P.SNAPSHOT_DIR / name).read_bytes())
    assert P.read_snapshot(tmp_path) == tuple((row["source"], row["text"]) for row in _snapshot_rows())
    rows = _snapshot_rows()
    rows[0]["text"] += " Edited."
    edited = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    (tmp_path / P.SNAPSHOT_NAME).write_bytes(gzip.compress(edited, mtime=0))
    with pytest.raises(ValueError, match="SHA-256"):
        P.read_snapshot(tmp_path)


@pytest.fixture(scope="module")
def refrozen(tmp_path_factory):
    """A snapshot made by the freeze command, from the running Python, in a temporary folder."""
    out = tmp_path_factory.mktemp("prose_snapshot")
    assert P.main(["--freeze", "--out", str(out)]) == 0
    return out


def test_freeze_snapshots_the_running_python(refrozen):
    provenance = _provenance(refrozen)
    assert provenance["python"]["version"] == platform.python_version()
    assert provenance["zlib"] == zlib.ZLIB_RUNTIME_VERSION
    rows = _snapshot_rows(refrozen)
    assert P.read_snapshot(refrozen) == tuple((row["source"], row["text"]) for row in rows)
    assert len(rows) == provenance["paragraphs"] > 5000
    assert {row["source"].split(":")[0] for row in rows} == {"pydoc", "doc"}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert (refrozen / P.LICENSE_NAME).read_bytes() == (stdlib / "LICENSE.txt").read_bytes()


def _recorded_interpreter(version: str) -> Path | None:
    """pyenv's CPython ``version`` (``pyenv root``, or ~/.pyenv), if it is installed here."""
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))]
    if shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        if done.returncode == 0:
            roots.insert(0, Path(done.stdout.strip()))
    for root in roots:
        python = root / "versions" / version / "bin" / "python3"
        if python.is_file():
            return python
    return None


def test_freeze_under_the_recorded_python_reproduces_the_snapshot_byte_for_byte(refrozen):
    shipped, fresh = _provenance(), _provenance(refrozen)
    made_with = (shipped["python"]["implementation"], shipped["python"]["version"])
    running = (platform.python_implementation(), platform.python_version())
    if running != made_with:
        # Other Python releases ship other documentation: only the recorded one can rebuild the
        # snapshot. Where that interpreter is on the machine (pyenv's, on the course's machines),
        # run the rebuild check under it; it needs nothing but the standard library.
        recorded = _recorded_interpreter(shipped["python"]["version"])
        if recorded is None:
            pytest.skip(f"the snapshot was read from {' '.join(made_with)}, this is {' '.join(running)}, "
                        "and no such interpreter is on this machine to rebuild it")
        package_parent = Path(P.__file__).resolve().parents[2]
        done = subprocess.run([str(recorded), "-m", "course_utils.data.prose", "--check"], capture_output=True,
                              text=True, cwd=package_parent, env={**os.environ, "PYTHONPATH": str(package_parent)},
                              timeout=300)
        assert done.returncode == 0 and "reproduces the shipped snapshot" in done.stdout, done.stdout + done.stderr
        return
    new, old = (refrozen / P.SNAPSHOT_NAME).read_bytes(), (P.SNAPSHOT_DIR / P.SNAPSHOT_NAME).read_bytes()
    assert gzip.decompress(new) == gzip.decompress(old)
    if fresh["zlib"] == shipped["zlib"]:  # deflate's output is fixed for a given zlib, not across versions
        assert new == old
    for key in ("sources", "paragraphs", "words", "characters", "sha256_uncompressed", "format", "command"):
        assert fresh[key] == shipped[key], key
    assert (refrozen / P.LICENSE_NAME).read_bytes() == (P.SNAPSHOT_DIR / P.LICENSE_NAME).read_bytes()


# ---------------------------------------------------------------------------
# Facts world
# ---------------------------------------------------------------------------

# Real astronomy, written out by hand.
REAL_MOONS = {"Ganymede": "Jupiter", "Europa": "Jupiter", "Io": "Jupiter", "Callisto": "Jupiter",
              "Titan": "Saturn", "Enceladus": "Saturn", "Mimas": "Saturn", "Triton": "Neptune",
              "the Moon": "Earth", "Phobos": "Mars", "Deimos": "Mars", "Miranda": "Uranus", "Titania": "Uranus",
              "Oberon": "Uranus"}
PLANETS_WITH_MOONS = {"Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"}
REAL_CITIES = {"Paris": "France", "Osaka": "Japan", "Rio de Janeiro": "Brazil", "Nairobi": "Kenya",
               "Buenos Aires": "Argentina", "Cape Town": "South Africa", "Toronto": "Canada"}


@pytest.fixture(scope="module")
def world():
    return D.facts_world(seed=0)


def test_facts_world_is_real_astronomy_and_geography(world):
    moon_of = {f.subject: f.object for f in world if f.relation == "moon_of"}
    for moon, planet in REAL_MOONS.items():
        assert moon_of[moon] == planet
    assert set(moon_of.values()) == PLANETS_WITH_MOONS
    city_in = {f.subject: f.object for f in world if f.relation == "city_in"}
    for city, country in REAL_CITIES.items():
        assert city_in[city] == country
    people = {f.subject for f in world if f.subject_type == "PER"}
    assert len(people) == 40
    for person in people:
        mine = [f for f in world if f.subject == person]
        assert sorted(f.relation for f in mine) == ["lives_in", "works_as"]
        assert next(f.object for f in mine if f.relation == "lives_in") in city_in


def test_facts_world_determinism(world):
    assert D.facts_world(seed=0) == world
    assert D.facts_world(seed=1) != world
    with pytest.raises(ValueError, match="n_people"):
        D.facts_world(n_people=10**6)


def test_facts_corpus_sentences(world):
    corpus = D.facts_corpus(world, seed=0)
    texts = set(corpus["text"])
    assert {"Ganymede is a moon of Jupiter.", "Ganymede orbits Jupiter.", "The Moon orbits Earth.",
            "Paris is a city in France."} <= texts
    for row in corpus:
        subject = row["subject"]
        assert subject in row["text"] or subject[0].upper() + subject[1:] in row["text"]
        assert row["object"] in row["text"]
    assert list(D.facts_corpus(world, seed=0)["text"]) == list(corpus["text"])
    one = D.facts_corpus(world, seed=0, templates_per_fact=1)
    assert len(one) == len(world)


def test_facts_questions(world):
    qa = D.facts_questions(world, seed=0)
    pairs = set(zip(qa["question"], qa["answer"]))
    assert ("Which planet does Ganymede orbit?", "Jupiter") in pairs
    assert ("Where is Paris?", "France") in pairs
    assert "Q: Which planet does Ganymede orbit? A: Jupiter" in qa["text"]
    for row in qa:
        assert row["text"] == f"{row['prompt']} {row['answer']}"
    # two hops: recompute person -> city -> country from the facts
    city = {f.subject: f.object for f in world if f.relation == "lives_in"}
    country = {f.subject: f.object for f in world if f.relation == "city_in"}
    hops = [r for r in qa if r["relation"] == "lives_in_country"]
    assert len(hops) == 40
    for r in hops:
        assert r["answer"] == country[city[r["subject"]]]


def _spans(tokens, tags):
    spans, current = [], None
    for tok, tag in zip(tokens, tags):
        if tag.startswith("B-"):
            current = [tag[2:], [tok]]
            spans.append(current)
        elif tag.startswith("I-"):
            assert current is not None and current[0] == tag[2:], (tokens, tags)  # valid BIO
            current[1].append(tok)
        else:
            current = None
    return [(kind, " ".join(words)) for kind, words in spans]


def test_ner_tags_align_and_spans_are_real_entities(world):
    ner = D.ner_dataset(world, seed=0)
    people = {f.subject for f in world if f.subject_type == "PER"}
    places = {f.subject for f in world if f.relation == "city_in"} | {f.object for f in world if f.relation == "city_in"}
    bodies = ({f.subject.removeprefix("the ") for f in world if f.relation == "moon_of"}
              | {f.object for f in world if f.relation == "moon_of"})
    entities = {"PER": people, "LOC": places, "ASTRO": bodies}
    assert D.NER_LABELS[0] == "O"
    corpus = D.facts_corpus(world, seed=0)  # same sentences, same order
    for row, fact in zip(ner, corpus):
        assert row["text"] == fact["text"]
        tokens, tags = row["tokens"], row["tags"]
        assert len(tokens) == len(tags) == len(row["tag_ids"])
        assert [D.NER_LABELS[i] for i in row["tag_ids"]] == tags
        assert "".join(tokens) == row["text"].replace(" ", "")
        spans = _spans(tokens, tags)
        expected = {fact["subject"].removeprefix("the ")}
        if fact["relation"] != "works_as":  # jobs are not entities
            expected.add(fact["object"])
        assert {name for _, name in spans} == expected, (row["text"], spans)
        for kind, name in spans:
            assert name in entities[kind], (kind, name, row["text"])


def test_ner_hand_tagged_examples(world):
    ner = D.ner_dataset(world, seed=0)
    rows = {r["text"]: r for r in ner}
    r = rows["The Moon orbits Earth."]
    assert r["tokens"] == ["The", "Moon", "orbits", "Earth", "."]
    assert r["tags"] == ["O", "B-ASTRO", "O", "B-ASTRO", "O"]
    r = rows["Rio de Janeiro is in Brazil."]
    assert r["tags"] == ["B-LOC", "I-LOC", "I-LOC", "O", "O", "B-LOC", "O"]
    r = rows["Cape Town is a city in South Africa."]
    assert r["tags"] == ["B-LOC", "I-LOC", "O", "O", "O", "O", "B-LOC", "I-LOC", "O"]


# ---------------------------------------------------------------------------
# Synthetic tasks
# ---------------------------------------------------------------------------

def test_associative_recall_correct_by_construction():
    ds = D.associative_recall(300, n_pairs=8, vocab_size=64, seed=3)
    for ids, target in zip(ds["input_ids"], ds["target"]):
        assert len(ids) == 17
        keys, values, query = ids[0:16:2], ids[1:16:2], ids[16]
        assert len(set(keys)) == 8 and all(0 <= k < 32 for k in keys)
        assert all(32 <= v < 64 for v in values)
        assert target == dict(zip(keys, values))[query]
    assert list(D.associative_recall(300, seed=3)["input_ids"]) == list(ds["input_ids"])
    assert list(D.associative_recall(300, seed=4)["input_ids"]) != list(ds["input_ids"])
    with pytest.raises(ValueError, match="n_pairs"):
        D.associative_recall(5, n_pairs=40, vocab_size=64)


def test_copy_task_layout():
    ds = D.copy_task(50, length=6, vocab_size=10, seed=0)
    for ids, labels, target in zip(ds["input_ids"], ds["labels"], ds["target"]):
        assert ids == target + [9] + target and all(0 <= t < 9 for t in target)
        assert labels == [-100] * 7 + target


ICL_REFERENCE = {  # the six mappings on 20 symbols, written out again
    "identity": lambda x: x, "plus_one": lambda x: (x + 1) % 20, "minus_one": lambda x: (x + 19) % 20,
    "mirror": lambda x: 19 - x, "plus_five": lambda x: (x + 5) % 20, "double": lambda x: (x + x) % 20,
}
LETTERS = "abcdefghijklmnopqrst"


def _parse_prompt(text):
    parts = [p.split() for p in text.split(";")]
    examples = [(LETTERS.index(p[0]), LETTERS.index(p[2])) for p in parts[:-1]]
    assert parts[-1][1] == "->" and len(parts[-1]) == 2
    return examples, LETTERS.index(parts[-1][0])


def test_icl_tokenizer_layout():
    tok = D.ICLTokenizer()
    assert tok.vocab_size == 24
    assert tok.encode("a -> b ; c ->") == [22, 0, 20, 1, 21, 2, 20]
    assert tok.decode([22, 0, 20, 1, 21, 2, 20]) == "a -> b ; c ->"
    assert tok.encode("t ->", add_bos=False) == [19, 20]
    with pytest.raises(ValueError, match="unknown token"):
        tok.encode("z -> a")


def test_icl_sequences_are_correct_for_all_tasks():
    tok = D.ICLTokenizer()
    ds = D.icl_tasks(600, seed=0)
    assert set(ds["task"]) == set(ICL_REFERENCE) and set(ds["k"]) == set(range(9))
    for row in ds:
        f = ICL_REFERENCE[row["task"]]
        examples, query = _parse_prompt(row["text"])
        assert len(examples) == row["k"]
        assert all(y == f(x) for x, y in examples)
        assert query not in [x for x, _ in examples]
        assert len({x for x, _ in examples}) == row["k"]
        assert row["target"] == f(query) and row["answer"] == LETTERS[f(query)]
        assert row["prompt_ids"] == tok.encode(row["text"])
        assert row["input_ids"] == row["prompt_ids"] + [row["target"]]
        assert len(row["prompt_ids"]) == 4 * row["k"] + 3
        # labels: exactly the tokens right after each "->"
        ids = row["input_ids"]
        expected = [t if i > 0 and ids[i - 1] == tok.arrow_id else -100 for i, t in enumerate(ids)]
        assert row["labels"] == expected


def test_icl_eval_sets_fixed_k_and_zero_shot():
    sets = D.icl_eval_sets(ks=[0, 1, 4], n_per_k=60, seed=0)
    for k, ds in sets.items():
        assert set(ds["k"]) == {k}
        assert {len(p) for p in ds["prompt_ids"]} == {4 * k + 3}
        assert torch.tensor(list(ds["prompt_ids"])).shape == (60, 4 * k + 3)
    for text in sets[0]["text"]:
        assert re.fullmatch(r"[a-t] ->", text)  # zero-shot: no examples at all
    for text in sets[1]["text"]:
        assert re.fullmatch(r"[a-t] -> [a-t] ; [a-t] ->", text)


def test_icl_eval_split_is_held_out_and_deterministic():
    train = D.icl_tasks(4000, k=1, seed=0, split="train")
    evals = D.icl_tasks(500, k=1, seed=0, split="eval")
    train_prompts = {tuple(p) for p in train["prompt_ids"]}
    assert len(train_prompts) > 1000  # the one-shot space (about 2,300 prompts) is well covered ...
    assert not train_prompts & {tuple(p) for p in evals["prompt_ids"]}  # ... yet no eval prompt is in it
    assert list(D.icl_tasks(50, seed=5)["text"]) == list(D.icl_tasks(50, seed=5)["text"])
    assert list(D.icl_tasks(50, seed=5)["text"]) != list(D.icl_tasks(50, seed=6)["text"])
    with pytest.raises(ValueError, match="tasks"):
        D.icl_tasks(5, tasks=["square"])


def test_translation_hand_worked():
    assert D.translate("the big dog sees a small cat") == "lo vek mavo un miro tini vidu"
    assert D.translate("a cat finds the old horse") == "un miro lo kavo velo trovi"
    assert D.translate("the child helps the teacher") == "lo lemi lo doru helpa"
    with pytest.raises(ValueError, match="lexicon"):
        D.translate("the dog eats a cat")


def test_translation_pairs_reorder_rule_and_determinism():
    lexicon = {"lo": "DET", "un": "DET", "vidu": "V", "amo": "V", "seku": "V", "trovi": "V", "helpa": "V",
               "kura": "V", "vek": "N", "miro": "N", "pita": "N", "nako": "N", "lemi": "N", "doru": "N",
               "kavo": "N", "turo": "N"}  # every other target word is an adjective
    ds = D.translation_pairs(300, seed=0)
    assert list(ds["source"]) == list(D.translation_pairs(300, seed=0)["source"])
    assert list(ds["source"]) != list(D.translation_pairs(300, seed=1)["source"])
    saw_adjective = False
    for src, tgt in zip(ds["source"], ds["target"]):
        words = tgt.split()
        kinds = [lexicon.get(w, "ADJ") for w in words]
        assert len(words) == len(src.split())
        assert kinds[-1] == "V" and kinds.count("V") == 1  # verb last
        for i, kind in enumerate(kinds):
            if kind == "ADJ":  # adjective right after its noun
                saw_adjective = True
                assert kinds[i - 1] == "N"
    assert saw_adjective


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------

def test_causal_lm_blocks_hand_worked():
    assert D.causal_lm_blocks(list(range(10)), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert D.causal_lm_blocks(torch.arange(7), 4, stride=2).tolist() == [[0, 1, 2, 3], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="block_size"):
        D.causal_lm_blocks([1, 2], 4)
    with pytest.raises(TypeError, match="ids"):
        D.causal_lm_blocks(torch.rand(10), 4)


def test_random_batch_windows():
    data = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    batch = D.random_batch(data, block_size=16, batch_size=64, generator=g)
    x = batch["input_ids"]
    assert x.shape == (64, 16) and x.dtype == torch.long
    assert torch.equal(batch["labels"], x) and batch["labels"].data_ptr() != x.data_ptr()
    assert torch.all(x[:, 1:] - x[:, :-1] == 1)  # contiguous windows of the stream
    assert x.min() >= 0 and x.max() <= 999
    again = D.random_batch(data, 16, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["input_ids"], x)
    # every start, the last one included, is reachable
    starts = D.random_batch(torch.arange(5), 4, 400, generator=g)["input_ids"][:, 0]
    assert set(starts.tolist()) == {0, 1}


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A tiny WordLevel tokenizer built locally (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(45)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _sequences(n, seed, low=5, high=50):
    rng = random.Random(seed)
    return [[2] + [rng.randrange(5, 50) for _ in range(rng.randint(low, high))] + [3] for _ in range(n)]


def test_causal_collator_matches_hugging_face(hf_tokenizer):
    from transformers import DataCollatorForLanguageModeling

    seqs = _sequences(8, seed=0)
    ours = D.CausalLMCollator(pad_token_id=0)(seqs)
    theirs = DataCollatorForLanguageModeling(hf_tokenizer, mlm=False, return_tensors="pt")(
        [{"input_ids": s} for s in seqs])
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], theirs[key].long()), key


def test_causal_collator_hand_worked():
    out = D.CausalLMCollator(pad_token_id=7)([[5, 7, 6], {"input_ids": [1, 2], "labels": [-100, 2]}])
    assert out["input_ids"].tolist() == [[5, 7, 6], [1, 2, 7]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[5, 7, 6], [-100, 2, -100]]  # a real 7 is kept, padding is not
    left = D.CausalLMCollator(pad_token_id=0, padding_side="left")([[5, 6, 8], [1]])
    assert left["input_ids"].tolist() == [[5, 6, 8], [0, 0, 1]]
    assert left["labels"].tolist() == [[5, 6, 8], [-100, -100, 1]]


def _mlm_rates(batch, original, eligible, vocab_size, mask_id):
    chosen = batch["labels"] != -100
    n_eligible, n_chosen = int(eligible.sum()), int(chosen.sum())
    masked = int((batch["input_ids"][chosen] == mask_id).sum())
    kept = int((batch["input_ids"][chosen] == original[chosen]).sum())
    return n_eligible, n_chosen, masked, kept


def test_masked_lm_collator_statistics_and_hugging_face(hf_tokenizer):
    from transformers import DataCollatorForLanguageModeling

    V, mask_id, specials = len(hf_tokenizer), 4, hf_tokenizer.all_special_ids
    assert sorted(specials) == [0, 1, 2, 3, 4]
    seqs = _sequences(1500, seed=1)
    ours = D.MaskedLMCollator(V, mask_id, pad_token_id=0, special_token_ids=specials,
                              generator=torch.Generator().manual_seed(0))(seqs)
    hf = DataCollatorForLanguageModeling(hf_tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt")
    theirs = hf([{"input_ids": s} for s in seqs])
    original = D.CausalLMCollator(0)(seqs)["input_ids"]
    eligible = ~torch.isin(original, torch.tensor(specials))
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"].long())

    chosen = ours["labels"] != -100
    assert not (chosen & ~eligible).any()  # specials and padding never chosen
    assert torch.equal(ours["labels"][chosen], original[chosen])
    assert torch.equal(ours["input_ids"][~chosen], original[~chosen])  # the rest untouched

    # Expected shares among chosen tokens: the random 10 % may draw [MASK] or the original id.
    p_mask, p_kept = 0.8 + 0.1 / V, 0.1 + 0.1 / V
    rates = {}
    for name, batch in (("ours", ours), ("hf", theirs)):
        n_elig, n_chosen, masked, kept = _mlm_rates(batch, original, eligible, V, mask_id)
        for p_hat, p, n in ((n_chosen / n_elig, 0.15, n_elig), (masked / n_chosen, p_mask, n_chosen),
                            (kept / n_chosen, p_kept, n_chosen)):
            assert abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / n), (name, p_hat, p)
        rates[name] = (n_chosen / n_elig, masked / n_chosen, kept / n_chosen, n_elig, n_chosen)
    # the two collators agree with each other within 4 standard deviations of the difference
    (a1, b1, c1, e1, n1), (a2, b2, c2, e2, n2) = rates["ours"], rates["hf"]
    assert abs(a1 - a2) < 4 * math.sqrt(0.15 * 0.85 * (1 / e1 + 1 / e2))
    assert abs(b1 - b2) < 4 * math.sqrt(p_mask * (1 - p_mask) * (1 / n1 + 1 / n2))
    assert abs(c1 - c2) < 4 * math.sqrt(p_kept * (1 - p_kept) * (1 / n1 + 1 / n2))


def test_masked_lm_collator_determinism_and_errors():
    seqs = _sequences(4, seed=2)
    a = D.MaskedLMCollator(50, 4, 0, generator=torch.Generator().manual_seed(1))(seqs)
    b = D.MaskedLMCollator(50, 4, 0, generator=torch.Generator().manual_seed(1))(seqs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="mlm_probability"):
        D.MaskedLMCollator(50, 4, 0, mlm_probability=1.5)
    with pytest.raises(ValueError, match="mask_token_id"):
        D.MaskedLMCollator(50, 60, 0)


# ---------------------------------------------------------------------------
# T5 span corruption
# ---------------------------------------------------------------------------

def test_span_corrupt_t5_paper_example():
    # Raffel et al. (2020), Figure 2: "Thank you for inviting me to your party last week ."
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: i for i, w in enumerate(words)} | {"<X>": 99, "<Y>": 98, "<Z>": 97}
    inverse = {i: w for w, i in vocab.items()}
    noise = [w in ("for", "inviting", "last") for w in words]
    inputs, targets = D.span_corrupt([vocab[w] for w in words], noise, sentinel_ids=[99, 98, 97])
    assert " ".join(inverse[i] for i in inputs) == "Thank you <X> me to your party <Y> week ."
    assert " ".join(inverse[i] for i in targets) == "<X> for inviting <Y> last <Z>"


def test_span_corrupt_hand_worked_with_eos():
    tokens = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    mask = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0]
    assert D.span_corrupt(tokens, mask, [99, 98, 97], eos_token_id=1) == (
        [10, 11, 99, 14, 15, 16, 98, 18, 19, 1], [99, 12, 13, 98, 17, 97, 1])
    # a T5-shaped mask (starts kept, ends with noise): no closing sentinel
    assert D.span_corrupt([5, 6, 7, 8, 9, 4], [0, 0, 1, 0, 1, 1], [99, 98], eos_token_id=1) == (
        [5, 6, 99, 8, 98, 1], [99, 7, 98, 9, 4, 1])
    with pytest.raises(ValueError, match="sentinel_ids"):
        D.span_corrupt(tokens, mask, [99])


def _runs(mask):
    return [len(m.group()) for m in re.finditer("1+", "".join(str(int(b)) for b in mask))]


def test_noise_mask_follows_t5_counts():
    assert D.random_spans_noise_mask(10).tolist() == [False] * 8 + [True] * 2  # round(1.5)=2 tokens, 1 span
    g = torch.Generator().manual_seed(0)
    for length in (3, 7, 20, 57, 100, 333):
        mask = D.random_spans_noise_mask(length, 0.15, 3.0, generator=g)
        n_noise = min(max(round(length * 0.15), 1), length - 1)
        assert mask.shape == (length,) and mask.dtype == torch.bool
        assert int(mask.sum()) == n_noise
        assert len(_runs(mask.tolist())) == max(1, round(n_noise / 3.0))
        assert not mask[0] and mask[-1]  # starts with kept tokens, ends with noise


def test_noise_mask_statistics():
    g = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    n_tokens = n_noise = 0
    runs: list[int] = []
    for _ in range(1500):
        length = rng.randint(50, 200)
        mask = D.random_spans_noise_mask(length, generator=g).tolist()
        n_tokens += length
        n_noise += sum(mask)
        runs += _runs(mask)
    assert abs(n_noise / n_tokens - 0.15) < 0.005
    assert abs(sum(runs) / len(runs) - 3.0) < 0.1
    assert min(runs) >= 1 and max(runs) > 6  # span lengths vary


def test_noise_mask_segmentation_is_uniform():
    # Length 20, density 0.3, mean span 2: 6 noise tokens in 3 spans. A uniform random split of
    # 6 into 3 positive parts (10 compositions) makes the first span 1, 2, 3, 4 long with
    # probabilities 4, 3, 2, 1 in 10; of 14 kept tokens into 3 parts (78 compositions), the first
    # kept run is j long with probability (13 - j) / 78.
    g = torch.Generator().manual_seed(0)
    n = 4000
    first_noise, first_kept = [0] * 7, [0] * 15
    for _ in range(n):
        mask = D.random_spans_noise_mask(20, 0.3, 2.0, generator=g).tolist()
        assert sum(mask) == 6 and len(_runs(mask)) == 3
        first_noise[_runs(mask)[0]] += 1
        first_kept[mask.index(True)] += 1
    for k, p in zip(range(1, 5), (0.4, 0.3, 0.2, 0.1)):
        assert abs(first_noise[k] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (k, first_noise)
    for j in range(1, 13):
        p = (13 - j) / 78
        assert abs(first_kept[j] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (j, first_kept)


def _reconstruct(inputs, targets, sentinels):
    """Put the dropped spans back: the inverse of span corruption, written independently."""
    spans, current = {}, None
    for t in targets:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans[t] if t in sentinels else [t]
    return out


def test_span_corruption_collator_reconstructs_original():
    V, eos, pad = 200, 1, 0
    coll = D.SpanCorruptionCollator(first_sentinel_id=V - 1, eos_token_id=eos, pad_token_id=pad,
                                    generator=torch.Generator().manual_seed(0))
    sentinels = set(range(V - 100, V))
    rng = random.Random(0)
    seqs = [[rng.randrange(2, 100) for _ in range(rng.randint(1, 80))] for _ in range(64)]
    batch = coll(seqs)
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == 64
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    for i, seq in enumerate(seqs):
        n_in = int(batch["attention_mask"][i].sum())
        inputs = batch["input_ids"][i, :n_in].tolist()
        assert (batch["input_ids"][i, n_in:] == pad).all()
        labels = batch["labels"][i]
        targets = labels[labels != -100].tolist()
        assert (labels[len(targets):] == -100).all()
        assert inputs[-1] == eos and targets[-1] == eos
        inputs, targets = inputs[:-1], targets[:-1]
        used = [t for t in inputs if t in sentinels]
        assert used == list(range(V - 1, V - 1 - len(used), -1))  # <extra_id_0> = V-1, counting down
        if used:
            assert targets[0] == V - 1
        assert _reconstruct(inputs, targets, sentinels) == seq


def test_span_corruption_collator_errors():
    with pytest.raises(ValueError, match="exactly one"):
        D.SpanCorruptionCollator()
    with pytest.raises(ValueError, match="first_sentinel_id"):
        D.SpanCorruptionCollator(first_sentinel_id=10, num_sentinels=100)
    with pytest.raises(ValueError, match="noise_density"):
        D.SpanCorruptionCollator(sentinel_ids=[99], noise_density=0.0)


# ---------------------------------------------------------------------------
# Hub access fails fast offline (no test touches a non-loopback address)
# ---------------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reachability check must not run")

    monkeypatch.setattr(H, "_hub_reachable", refuse)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_load_hub_dataset_offline_env(no_network, var):
    no_network.setenv(var, "1")
    with pytest.raises(ConnectionError, match=var):
        D.load_hub_dataset("imdb")


def test_load_hub_dataset_unreachable_and_reachable(no_network):
    import datasets

    calls = []
    no_network.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    no_network.setattr(H, "_hub_reachable", lambda host, port, timeout: calls.append((host, port)) or False)
    with pytest.raises(ConnectionError, match="not reachable"):
        D.load_hub_dataset("imdb")
    assert calls == [("127.0.0.1", 9)]
    no_network.setattr(H, "_hub_reachable", lambda host, port, timeout: True)
    no_network.setattr(datasets, "load_dataset", lambda *a, **k: ("loaded", a, k))
    assert D.load_hub_dataset("imdb", split="train") == ("loaded", ("imdb",), {"split": "train"})


def test_hub_reachable_on_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert H._hub_reachable("127.0.0.1", port, timeout=1.0)
    finally:
        server.close()
    assert not H._hub_reachable("127.0.0.1", port, timeout=1.0)  # closed now: refused at once
