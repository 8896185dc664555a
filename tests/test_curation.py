"""course_utils.curation against hand-worked examples and independent brute-force references."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from course_utils.curation import (
    BOILERPLATE,
    as_documents,
    clean_lines,
    count_tokens,
    english_like,
    exact_dedup,
    garbled,
    gopher_quality,
    jaccard,
    make_raw_corpus,
    near_copy,
    near_dedup,
    normalize,
    not_english,
    shingles,
    with_text,
)
from course_utils.tokenization import CharTokenizer


def words(prefix: str, n: int) -> list[str]:
    """n distinct words of 4+ letters: 'wa0', ... -> ['pa0x', 'pa1x', ...]."""
    return [f"{prefix}{i}x" for i in range(n)]


# ----------------------------------------------------------------------------- shingles and Jaccard


def test_shingles_hand_worked():
    assert shingles("a b c d", 2) == {"a b", "b c", "c d"}
    assert shingles("The cat  SAT\non the mat", 3) == {"the cat sat", "cat sat on", "sat on the", "on the mat"}
    assert shingles("a b c d", 4) == {"a b c d"}
    assert shingles("a b", 5) == {"a b"}  # shorter than n: one shingle
    assert shingles("x y x y x", 2) == {"x y", "y x"}  # a set: repeats count once
    assert shingles("one two three", 1) == {"one", "two", "three"}


def test_jaccard_hand_worked():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert jaccard({"a"}, {"b"}) == 0.0
    assert jaccard(frozenset("abc"), set("abc")) == 1.0
    assert jaccard(set(), set()) == 1.0
    # "the cat sat on the mat" vs "the cat sat on a mat", bigrams:
    # {the cat, cat sat, sat on, on the, the mat} and {the cat, cat sat, sat on, on a, a mat}: 3 shared of 7.
    a, b = shingles("the cat sat on the mat", 2), shingles("the cat sat on a mat", 2)
    assert len(a) == 5 and len(b) == 5
    assert jaccard(a, b) == pytest.approx(3 / 7, abs=1e-12)
    assert jaccard(a, b) == jaccard(b, a)


def test_one_word_edit_changes_n_shingles():
    # 60 distinct words have 56 5-grams; a word in the middle is in 5 of them, so the edit
    # leaves 51 shared and 5 + 5 different: Jaccard 51 / 61.
    doc = words("w", 60)
    edited = list(doc)
    edited[30] = "zzzz"
    assert jaccard(shingles(" ".join(doc)), shingles(" ".join(edited))) == pytest.approx(51 / 61, abs=1e-12)
    # An edit of the first word only touches one 5-gram: 55 shared of 57.
    edited = ["zzzz"] + doc[1:]
    assert jaccard(shingles(" ".join(doc)), shingles(" ".join(edited))) == pytest.approx(55 / 57, abs=1e-12)


# ----------------------------------------------------------------------------- exact and near deduplication


def test_normalize():
    assert normalize("  Hello\t\tWORLD\n ") == "hello world"
    assert normalize("") == ""


def test_exact_dedup_keeps_first_of_normalized_duplicates():
    docs = ["Hello  World", "hello world", "hello world!", "HELLO\nWORLD", "", " "]
    assert exact_dedup(docs) == ["Hello  World", "hello world!", ""]
    dicts = [{"text": "A b", "id": 1}, {"text": "c", "id": 2}, {"text": "a   B", "id": 3}, {"text": "C ", "id": 4}]
    kept = exact_dedup(dicts)
    assert [d["id"] for d in kept] == [1, 2]
    assert kept[0] is dicts[0], "exact_dedup returns the documents themselves"
    assert exact_dedup([]) == []


def test_exact_dedup_matches_a_hash_set_reference():
    rng = random.Random(0)
    vocab = ["a", "b", "A", "B", "c"]
    docs = [" ".join(rng.choices(vocab, k=rng.randint(1, 3))) + rng.choice(["", " ", "\n"]) for _ in range(300)]
    seen, expected = set(), []
    for d in docs:
        key = hashlib.md5(" ".join(d.lower().split()).encode()).digest()
        if key not in seen:
            seen.add(key)
            expected.append(d)
    assert exact_dedup(docs) == expected


def test_near_dedup_catches_a_one_word_edit_but_not_distinct_docs():
    original = " ".join(words("w", 60))
    edited = original.replace("w30x", "zzzz")  # Jaccard 51/61 = 0.836 with the original
    other = " ".join(words("v", 60))
    docs = [{"text": original, "id": 0}, {"text": other, "id": 1}, {"text": edited, "id": 2}]
    assert [d["id"] for d in near_dedup(docs)] == [0, 1]
    assert [d["id"] for d in near_dedup(docs, threshold=0.9)] == [0, 1, 2]  # 0.836 < 0.9
    assert [d["id"] for d in near_dedup(docs[::-1])] == [2, 1], "the first of two near copies is kept"
    # Exact copies are near copies too; distinct texts are all kept.
    assert near_dedup([original, original, other]) == [original, other]
    assert near_dedup([other, original]) == [other, original]


def test_near_dedup_compares_with_kept_documents_only():
    # b is a near copy of a (dropped); c is a near copy of b (0.836) but not of a (46/66 = 0.70):
    # since b was dropped, c is kept.
    a = words("w", 60)
    b = list(a)
    b[10] = "zzzz"
    c = list(b)
    c[30] = "yyyy"
    a, b, c = (" ".join(x) for x in (a, b, c))
    assert jaccard(shingles(c), shingles(a)) == pytest.approx(46 / 66, abs=1e-12)
    assert near_dedup([a, b, c]) == [a, c]


def test_near_dedup_equals_brute_force():
    rng = random.Random(1)
    base = [words(p, 30) for p in "pqrs"]
    docs = []
    for _ in range(60):
        doc = list(rng.choice(base))
        for _ in range(rng.choice([0, 1, 2, 4, 8])):
            doc[rng.randrange(len(doc))] = rng.choice(["aaaa", "bbbb", "cccc"])
        docs.append(" ".join(doc))
    for n, threshold in [(5, 0.8), (3, 0.5), (2, 0.95), (1, 1.0)]:
        kept = []  # every document against every kept one, the slow way
        for d in docs:
            sd = {tuple(d.lower().split()[i:i + n]) for i in range(len(d.split()) - n + 1)}
            if all(len(sd & sk) / len(sd | sk) < threshold for sk in (
                    {tuple(k.lower().split()[i:i + n]) for i in range(len(k.split()) - n + 1)} for k in kept)):
                kept.append(d)
        assert near_dedup(docs, n=n, threshold=threshold) == kept, (n, threshold)
        assert 1 < len(kept) < len(docs)


# ----------------------------------------------------------------------------- line filter


def test_clean_lines_hand_worked():
    text = "\n".join([
        "Home | About | Blog | Contact",                       # no terminal punctuation
        "The function returns a list of values.",              # kept
        "Read more.",                                          # two words
        "Please enable JavaScript to view the comments.",     # policy word
        "We use COOKIES to make the site work!",              # policy word, any case
        "The result is one of the following:",                 # ':' counts as a line end
        "It is computed once (see the notes)",                 # ')' too
        "Is this a question that needs answering?   ",         # trailing spaces are fine
        "",
    ])
    assert clean_lines(text) == "\n".join([
        "The function returns a list of values.",
        "The result is one of the following:",
        "It is computed once (see the notes)",
        "Is this a question that needs answering?   ",
    ])
    assert clean_lines("Read more.", min_words=2) == "Read more."
    assert clean_lines("Read more.", min_words=3) == ""
    assert clean_lines("") == ""
    passing = [b for b in BOILERPLATE if clean_lines(b)]
    assert "Home | About | Blog | Contact" not in passing and "Click here to subscribe to our newsletter!" in passing


# ----------------------------------------------------------------------------- quality rules


def test_gopher_quality_word_count():
    assert gopher_quality("cat " * 49) == "word count"
    assert gopher_quality("cat " * 50) is None
    assert gopher_quality("cat " * 100_000) is None
    assert gopher_quality("cat " * 100_001) == "word count"
    assert gopher_quality("") == "word count"


def test_gopher_quality_mean_word_length():
    assert gopher_quality("ab " * 60) == "mean word length"              # 2 letters
    assert gopher_quality("ab abcd " * 30) is None                       # mean 3
    assert gopher_quality("abcdefghijk " * 60) == "mean word length"     # 11 letters
    assert gopher_quality("abcdefghij " * 60) is None                    # 10 letters


def test_gopher_quality_symbol_ratio():
    # 50 words: '#' or '...' more than 0.1 per word fails.
    assert gopher_quality(" ".join(["#tag"] * 5 + ["cats"] * 45)) is None         # 5 / 50 = 0.1
    assert gopher_quality(" ".join(["#tag"] * 6 + ["cats"] * 44)) == "symbol ratio"
    assert gopher_quality(" ".join(["wait..."] * 6 + ["cats"] * 44)) == "symbol ratio"
    assert gopher_quality(" ".join(["##xy"] * 3 + ["cats"] * 47)) == "symbol ratio"  # per character: 6 / 50
    assert gopher_quality(" ".join(["....x"] * 5 + ["cats"] * 45)) is None           # '....' is one '...'


def test_gopher_quality_words_with_a_letter():
    assert gopher_quality(" ".join(["123"] * 10 + ["cat"] * 40)) is None                  # 40 / 50 = 0.8
    assert gopher_quality(" ".join(["123"] * 11 + ["cat"] * 39)) == "words with a letter"  # 0.78
    assert gopher_quality(" ".join(["a1b2"] * 50)) is None                                # a letter is enough


def test_gopher_quality_repeated_lines():
    line = "the cats sat upon the mats"  # 7 words with the number: 10 lines make 70 words
    distinct = [f"{line} number{i}" for i in range(10)]
    assert gopher_quality("\n".join(distinct[:7] + distinct[:3])) is None               # 3 of 10 repeat: 0.3
    assert gopher_quality("\n".join(distinct[:6] + distinct[:4])) == "repeated lines"   # 4 of 10: 0.4
    assert gopher_quality("\n\n".join(distinct)) is None                                 # blank lines ignored
    assert gopher_quality("\n".join([line] * 12)) == "repeated lines"


def test_gopher_quality_reports_the_first_failed_rule():
    assert gopher_quality("# " * 10) == "word count"                         # also symbols and length
    assert gopher_quality("#a " * 60) == "mean word length"                  # also 1 symbol per word
    assert gopher_quality("\n".join(["12345 #"] * 30)) == "symbol ratio"     # also repeats, letters


def test_english_like():
    assert english_like("The cat and the dog.")                 # the, and
    assert not english_like("The cat sat on a mat.")            # only "the"
    assert english_like('(THE) "end" OF it,')                   # case and punctuation
    assert not english_like("there bee toe off")                # whole words only
    assert english_like("xyz", min_stop_words=0)
    assert english_like("the be to of and that have with", min_stop_words=8)
    assert not english_like("the be to of and that have", min_stop_words=8)


# ----------------------------------------------------------------------------- the dirty corpus


def test_as_documents_hand_worked():
    assert as_documents(["a", "a", "b"], ["x y", "z", "w"], min_words=2) == ["x y\nz", "w"]
    assert as_documents(["a", "a", "a"], ["x", "y", "z"], min_words=2) == ["x\ny\nz"]
    assert as_documents(["a", "a", "a", "a"], ["x y", "z w", "v", "u"], min_words=2) == ["x y", "z w", "v\nu"]
    assert as_documents(["a", "b", "b"], ["x", "y z", "w"], min_words=2) == ["x", "y z\nw"]
    assert as_documents([], [], min_words=5) == []


def test_as_documents_keeps_every_paragraph_in_order():
    rng = random.Random(2)
    sources = sorted(rng.choice("abcd") for _ in range(200))
    paragraphs = [" ".join(["w"] * rng.randint(1, 40)) + f" p{i}" for i in range(200)]
    docs = as_documents(sources, paragraphs, min_words=30)
    assert "\n".join(docs) == "\n".join(paragraphs)
    for source, group in itertools.groupby(zip(sources, paragraphs), key=lambda t: t[0]):
        total = sum(len(p.split()) for _, p in group)
        if total >= 30:  # a source with enough words only makes documents of >= 30 words
            mine = [d for d in docs if any(p in d.split("\n") for s, p in zip(sources, paragraphs) if s == source)]
            assert all(len(d.split()) >= 30 for d in mine)


def test_junk_generators():
    for seed in range(20):
        assert not english_like(garbled(random.Random(seed)))
        assert not english_like(not_english(random.Random(seed)))
    assert garbled(random.Random(3)) == garbled(random.Random(3))
    doc = " ".join(words("w", 40))
    assert near_copy(doc, random.Random(0), n_changes=0) == doc
    for seed in range(10):
        copy = near_copy(doc, random.Random(seed)).split(" ")
        changed = [i for i, (a, b) in enumerate(zip(doc.split(" "), copy)) if a != b]
        assert len(copy) == 40 and len(changed) == 1 and copy[changed[0]] in {"the", "a", "this", "that", "any"}


def test_make_raw_corpus_labels():
    clean = [" ".join(words(f"d{k}_", 60)) + "." for k in range(100)]
    raw = make_raw_corpus(clean, seed=0)
    kinds = [d["kind"] for d in raw]
    assert kinds.count("boilerplate") == 10
    for kind in ("too short", "garbled", "repeated lines", "not English"):
        assert kinds.count(kind) == 5, kind
    for family, doc in enumerate(clean):
        mine = [d for d in raw if d["family"] == family]
        originals = [i for i, d in enumerate(mine) if d["kind"] in ("clean", "clean + boilerplate line")]
        duplicates = [i for i, d in enumerate(mine) if d["kind"] == "exact duplicate"]
        assert originals and all(i > originals[0] for i in duplicates), "a duplicate never comes before an original"
        assert sum(d["kind"] == "near duplicate" for d in mine) <= 1
        for d in mine:
            if d["kind"] in ("clean", "exact duplicate"):
                assert d["text"] == doc
            elif d["kind"] == "clean + boilerplate line":
                assert sorted(d["text"].split("\n")) == sorted([doc, *[b for b in BOILERPLATE if b in d["text"]]])
    assert make_raw_corpus(clean, seed=0) == raw
    assert make_raw_corpus(clean, seed=1) != raw


def test_pipeline_removes_the_generated_junk():
    clean = [" ".join(f"{w} of the text {k}." for w in words(f"d{k}_", 15)) for k in range(80)]
    raw = make_raw_corpus(clean, seed=0)
    docs = [with_text(d, clean_lines(d["text"])) for d in raw]
    docs = [d for d in docs if d["text"].strip() and gopher_quality(d["text"]) is None and english_like(d["text"])]
    kept = near_dedup(exact_dedup(docs))
    assert not [d["kind"] for d in kept if d["family"] is None], "every junk document is removed"
    families = [d["family"] for d in kept]
    assert sorted(set(families)) == list(range(80)), "every clean document survives"
    assert len(families) == 80, "exactly one copy of each"


# ----------------------------------------------------------------------------- counting tokens


def test_with_text():
    doc = {"text": "a", "kind": "k", "family": 3}
    new = with_text(doc, "b")
    assert new == {"text": "b", "kind": "k", "family": 3}
    assert doc["text"] == "a", "with_text returns a copy"


def test_count_tokens_and_fraction_kept():
    raw = ["a b c", "d e", "a b c", "f"]
    kept = exact_dedup(raw)
    assert count_tokens(raw, str.split) == 9
    assert count_tokens(kept, str.split) == 6
    assert count_tokens(kept, str.split) / count_tokens(raw, str.split) == pytest.approx(2 / 3)
    tok = CharTokenizer("abcdef ")
    assert count_tokens([{"text": "abc"}, {"text": "de f"}], tok) == 7  # one token per character
    assert count_tokens([], tok) == 0
    cache = {"a b c": 10}  # a cache is read and filled
    assert count_tokens(raw, str.split, cache=cache) == 23
    assert cache == {"a b c": 10, "d e": 2, "f": 1}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, words_in_message", [
    (lambda: shingles("a b", 0), ValueError, ["n", "0"]),
    (lambda: shingles(3), TypeError, ["text", "int"]),
    (lambda: jaccard([1], {1}), TypeError, ["a", "list"]),
    (lambda: near_dedup(["a"], threshold=0.0), ValueError, ["threshold", "0.0"]),
    (lambda: near_dedup(["a"], threshold=1.5), ValueError, ["threshold", "1.5"]),
    (lambda: near_dedup("abc"), TypeError, ["docs", "str"]),
    (lambda: exact_dedup([{"id": 1}]), TypeError, ["docs[0]", "text"]),
    (lambda: as_documents(["a"], ["x", "y"]), ValueError, ["same length", "1", "2"]),
    (lambda: as_documents(["a"], ["x"], min_words=0), ValueError, ["min_words", "0"]),
    (lambda: clean_lines("x", min_words=-1), ValueError, ["min_words", "-1"]),
    (lambda: gopher_quality(None), TypeError, ["text", "NoneType"]),
    (lambda: english_like("x", min_stop_words=-2), ValueError, ["min_stop_words", "-2"]),
    (lambda: near_copy("a b", random.Random(0), n_changes=-1), ValueError, ["n_changes", "-1"]),
    (lambda: garbled(0), TypeError, ["rng", "int"]),
    (lambda: make_raw_corpus("abc"), TypeError, ["clean_docs"]),
    (lambda: count_tokens(["a"], 3), TypeError, ["tokenizer", "int"]),
    (lambda: with_text("a", "b"), TypeError, ["doc", "str"]),
])
def test_bad_input(call, error, words_in_message):
    with pytest.raises(error) as info:
        call()
    for w in words_in_message:
        assert w in str(info.value)
