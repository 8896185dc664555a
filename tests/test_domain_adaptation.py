"""course_utils.domain_adaptation against hand-worked examples and independent references.

References: Python's own ``ast`` (a source without docstrings must parse to the
original tree minus its docstrings) and ``tokenize`` (its comments are kept),
SHA-256 from ``hashlib`` for the split, the binomial distribution for the
mixing sampler, and :func:`course_utils.training.evaluate` and ``train`` for the
continued pre-training run. Everything runs on the CPU in a few seconds.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import math
import tokenize

import pytest
import torch
from matplotlib.figure import Figure

from course_utils.data.prose import _DOC_MODULES
from course_utils.domain_adaptation import (CODE_MODULES, code_corpus, continued_pretraining, mixed_batch,
                                            plot_domain_curves, split_by_file, stdlib_root, strip_docstrings)
from course_utils.training import TrainConfig, evaluate, train
from course_utils.transformer import DecoderOnlyLM, TransformerConfig
from test_training import one_thread  # noqa: F401  (autouse: one thread, as there)


# ----------------------------------------------------------------------------- strip_docstrings

DOCUMENTED = '''"""Module doc."""
# a comment
import os


class A:
    """Class doc,
    on two lines."""

    x = 1  # keep me

    def f(self):
        """Only statement."""


def g(): "inline doc"; return 2


async def h():
    \'\'\'Doc.\'\'\'  # comment on the closing line
    return "not a docstring"
'''

STRIPPED = '''# a comment
import os


class A:

    x = 1  # keep me

    def f(self):
        pass


def g(): pass; return 2


async def h():
    return "not a docstring"
'''


def test_strip_docstrings_hand_worked():
    assert strip_docstrings(DOCUMENTED) == STRIPPED
    assert strip_docstrings('def f():\n    """Doc."""\n    return 1  # one\n') == "def f():\n    return 1  # one\n"
    assert strip_docstrings("x = 1\n") == "x = 1\n"  # nothing to strip
    assert strip_docstrings('"""Only a docstring."""') == "pass"  # no final newline: none added
    # a non-ASCII name before an inline docstring: ast's column offsets count bytes, not characters
    assert strip_docstrings('def café(): "doc"; return 1\n') == "def café(): pass; return 1\n"
    assert strip_docstrings('def f():\n    "é" "doc"\n    return 1\n') == "def f():\n    return 1\n"


def _without_docstrings(tree: ast.AST) -> str:
    """The reference: the tree with each docstring deleted (or made ``pass`` when alone), dumped."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _comments(source: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]


@pytest.fixture(scope="module")
def stdlib_sources() -> dict[str, str]:
    root = stdlib_root()
    return {m: (root / f"{m}.py").read_text(encoding="utf-8") for m in CODE_MODULES if (root / f"{m}.py").is_file()}


def test_strip_docstrings_keeps_the_code_and_its_comments_on_the_real_stdlib(stdlib_sources):
    assert len(stdlib_sources) >= 30, "most of CODE_MODULES should exist in a supported Python"
    sample = {name: stdlib_sources[name] for name in sorted(stdlib_sources)[::4]}  # a quarter: a few seconds
    removed = 0
    for name, source in sample.items():
        stripped = strip_docstrings(source)
        assert ast.dump(ast.parse(stripped), include_attributes=False) == _without_docstrings(ast.parse(source)), name
        kept = _comments(stripped)
        assert set(kept) <= set(_comments(source)) and len(kept) >= len(_comments(source)) - 2, name
        removed += len(source) - len(stripped)
    assert removed > 0.05 * sum(map(len, sample.values()))  # the stdlib is well documented


def test_strip_docstrings_bad_input():
    with pytest.raises(TypeError, match="source must be a str"):
        strip_docstrings(b"x = 1")
    with pytest.raises(SyntaxError):
        strip_docstrings("def f(:\n")


# ----------------------------------------------------------------------------- the split and the corpus


def test_split_by_file_against_sha256():
    names = [f"pkg/mod{i}" for i in range(23)]
    parts = split_by_file(names, 0.2)
    expected = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:round(23 * 0.2)]
    assert parts["validation"] == sorted(expected)
    assert parts["train"] == sorted(set(names) - set(expected))
    assert split_by_file(names[::-1], 0.2) == parts  # the input order does not matter
    assert split_by_file(["a", "b", "c", "d", "e"], 0.2) == {"train": ["a", "b", "c", "e"], "validation": ["d"]}
    assert len(split_by_file(["a", "b"], 0.01)["validation"]) == 1  # at least one file each
    assert len(split_by_file(["a", "b"], 0.99)["train"]) == 1


@pytest.mark.parametrize("names, fraction, error, match", [
    ("abc", 0.2, TypeError, "sequence of file names"),
    (["a", 1], 0.2, TypeError, "only str"),
    (["a", "a", "b"], 0.2, ValueError, "repeat"),
    (["a"], 0.2, ValueError, "at least 2"),
    (["a", "b"], 0.0, ValueError, "validation_fraction"),
    (["a", "b"], 1.0, ValueError, "validation_fraction"),
    (["a", "b"], True, TypeError, "validation_fraction"),
])
def test_split_by_file_bad_input(names, fraction, error, match):
    with pytest.raises(error, match=match):
        split_by_file(names, fraction)


def test_code_corpus_on_the_stdlib_is_deterministic_and_split_by_file(stdlib_sources):
    corpus = code_corpus()
    assert corpus == code_corpus()
    train_names = [m for m, _ in corpus["train"]]
    val_names = [m for m, _ in corpus["validation"]]
    assert not set(train_names) & set(val_names), "a file in both splits"
    assert sorted(train_names + val_names) == sorted(stdlib_sources)
    assert train_names == sorted(train_names) and val_names == sorted(val_names)
    assert len(val_names) == round(len(stdlib_sources) * 0.2)
    for name, text in corpus["train"] + corpus["validation"]:
        assert text == strip_docstrings(stdlib_sources[name])
    originals = code_corpus("validation", docstrings=True)
    assert originals == [(m, stdlib_sources[m]) for m in val_names]
    # the code domain shares no file with the prose corpus's docstrings
    assert not set(CODE_MODULES) & set(_DOC_MODULES)
    assert list(CODE_MODULES) == sorted(set(CODE_MODULES))


def test_code_corpus_reads_a_given_folder(tmp_path):
    for i in range(5):
        (tmp_path / f"m{i}.py").write_text(f'"""Doc {i}."""\nX = {i}  # the value\n', encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "n.py").write_text("def f():\n    'Doc.'\n", encoding="utf-8")
    corpus = code_corpus(modules=["m0", "m1", "m2", "m3", "m4", "sub/n", "missing"], root=tmp_path,
                         validation_fraction=0.5)
    everything = dict(corpus["train"] + corpus["validation"])
    assert set(everything) == {"m0", "m1", "m2", "m3", "m4", "sub/n"}  # the missing file is skipped
    assert len(corpus["validation"]) == 3
    assert everything["m3"] == "X = 3  # the value\n" and everything["sub/n"] == "def f():\n    pass\n"


def test_code_corpus_bad_input(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        code_corpus("test")
    with pytest.raises(ValueError, match="root must be a folder"):
        code_corpus(root=tmp_path / "nowhere")
    with pytest.raises(TypeError, match="modules must be a sequence"):
        code_corpus(modules="os")
    (tmp_path / "only.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="at least 2 of the modules"):
        code_corpus(modules=["only", "other"], root=tmp_path)


# ----------------------------------------------------------------------------- mixed_batch

NEW = torch.arange(0, 100)  # the new domain's ids: 0..99
OLD = torch.arange(100, 200)  # the old domain's ids: 100..199


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_mixed_batch_gives_the_requested_share_of_old_rows(share):
    generator = torch.Generator().manual_seed(0)
    n_batches, batch_size, block = 100, 200, 8
    old_rows = 0
    for _ in range(n_batches):
        batch = mixed_batch(NEW, OLD, share, block, batch_size, generator=generator)
        x = batch["input_ids"]
        assert x.shape == (batch_size, block) and torch.equal(batch["labels"], x)
        from_old = x[:, 0] >= 100
        assert torch.all((x >= 100) == from_old[:, None]), "a row mixes the two domains"
        assert torch.all(x[:, 1:] - x[:, :-1] == 1), "a row is not a contiguous window of its stream"
        old_rows += int(from_old.sum())
    n = n_batches * batch_size
    sd = math.sqrt(share * (1 - share) / n)  # binomial standard deviation of the observed share: about 0.003
    assert abs(old_rows / n - share) < 4 * sd


def test_mixed_batch_extremes_and_seed():
    generator = torch.Generator().manual_seed(1)
    assert torch.all(mixed_batch(NEW, OLD, 0.0, 8, 64, generator=generator)["input_ids"] < 100)
    assert torch.all(mixed_batch(NEW, OLD, 1.0, 8, 64, generator=generator)["input_ids"] >= 100)
    a = mixed_batch(NEW, OLD, 0.3, 8, 16, generator=torch.Generator().manual_seed(5))
    b = mixed_batch(NEW.tolist(), OLD.tolist(), 0.3, 8, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["input_ids"], b["input_ids"])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(old_share=1.5), ValueError, "old_share"),
    (dict(old_share=-0.1), ValueError, "old_share"),
    (dict(old_share=True), TypeError, "old_share"),
    (dict(block_size=500), ValueError, "at least block_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_mixed_batch_bad_input(kwargs, error, match):
    args = dict(new=NEW, old=OLD, old_share=0.5, block_size=8, batch_size=4) | kwargs
    with pytest.raises(error, match=match):
        mixed_batch(**args)


# ----------------------------------------------------------------------------- continued_pretraining


def _tiny() -> DecoderOnlyLM:
    torch.manual_seed(0)
    return DecoderOnlyLM(TransformerConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))


def _domains():
    """The new domain repeats 0..7 in order (learnable); the old one is random ids 8..15."""
    new = torch.arange(8).repeat(100)
    old = torch.randint(8, 16, (800,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    eval_sets = {"new": [mixed_batch(new, old, 0.0, 16, 8, generator=g) for _ in range(2)],
                 "old": [mixed_batch(new, old, 1.0, 16, 8, generator=g) for _ in range(2)]}
    get_batch = lambda split, generator=None: mixed_batch(new, old, 0.0, 16, 8, generator=generator)
    return get_batch, eval_sets


def test_continued_pretraining_lowers_in_domain_loss_and_scores_every_checkpoint():
    get_batch, eval_sets = _domains()
    config = TrainConfig(max_steps=30, lr=1e-2, warmup_steps=3, log_every=5, device="cpu", progress=False)
    model = _tiny()
    before = {name: evaluate(model, batches)[1] for name, batches in eval_sets.items()}
    curves, history = continued_pretraining(model, get_batch, config, eval_sets, eval_every=10)
    assert curves["step"] == [0, 10, 20, 30]
    assert curves["new"][0] == pytest.approx(before["new"]) and curves["old"][0] == pytest.approx(before["old"])
    assert curves["new"][-1] < 0.5 * curves["new"][0], curves["new"]  # the in-domain loss fell
    # the model ends with its last weights, and the last score is theirs
    assert curves["new"][-1] == pytest.approx(evaluate(model, eval_sets["new"])[1])
    assert curves["old"][-1] == pytest.approx(evaluate(model, eval_sets["old"])[1])
    # scoring from checkpoints does not change the run: a plain train() gives the same losses
    plain = _tiny()
    reference = train(plain, get_batch, config)
    assert history.train_loss == pytest.approx(reference.train_loss)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))


def test_continued_pretraining_bad_input():
    get_batch, eval_sets = _domains()
    config = TrainConfig(max_steps=2, warmup_steps=1, device="cpu", progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        continued_pretraining(_tiny(), get_batch, {"max_steps": 2}, eval_sets, 1)
    with pytest.raises(TypeError, match="eval_sets must be a non-empty dict"):
        continued_pretraining(_tiny(), get_batch, config, {}, 1)
    with pytest.raises(TypeError, match="non-empty list of batch dicts"):
        continued_pretraining(_tiny(), get_batch, config, {"new": iter(eval_sets["new"])}, 1)
    with pytest.raises(ValueError, match="not 'step'"):
        continued_pretraining(_tiny(), get_batch, config, {"step": eval_sets["new"]}, 1)
    with pytest.raises(ValueError, match="eval_every"):
        continued_pretraining(_tiny(), get_batch, config, eval_sets, 0)


# ----------------------------------------------------------------------------- the figure


def test_plot_domain_curves():
    runs = {"0 %": {"step": [0, 5], "code": [500.0, 20.0], "prose": [50.0, 100.0]},
            "25 %": {"step": [0, 5], "code": [500.0, 22.0], "prose": [50.0, 60.0]}}
    fig = plot_domain_curves(runs, title="t")
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["code", "prose"]
    assert [len(ax.get_lines()) for ax in axes] == [3, 3]  # two runs and the "before" line
    assert [ax.get_yscale() for ax in axes] == ["log", "linear"]  # code spans a factor of 25, prose of 2
    assert list(axes[1].get_lines()[0].get_ydata()) == [50.0, 100.0]
    assert [ax.get_title() for ax in plot_domain_curves(runs, domains=["prose"]).get_axes()] == ["prose"]
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_domain_curves({})
    with pytest.raises(ValueError, match="no curve for"):
        plot_domain_curves(runs, domains=["math"])
    with pytest.raises(ValueError, match="one value per step"):
        plot_domain_curves({"x": {"step": [0, 5], "code": [1.0]}})
