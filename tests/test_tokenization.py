"""Tests for course_utils.tokenization: the specification of the tokenizers.

References used: hand-worked examples (the textbook "aaabdaaabac"), a naive
byte-pair trainer that recounts every pair after every merge (written here, it
is the definition of what training must produce), and Hugging Face
``tokenizers`` (its pre-tokenizer and its byte-level BPE trainer).

English text comes with Python: the help topics in ``pydoc_data.topics``.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter

import pytest
import regex
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydoc_data.topics import topics

from course_utils.tokenization import (
    GPT2_SPLIT_PATTERN,
    STDLIB_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    compare_tokenizers,
    get_pair_counts,
    merge,
    train_hf_bpe,
)

_KEYS = sorted(topics)
TRAIN_TEXT = "\n".join(topics[k] for k in _KEYS[::2])  # half of the topics ...
HELDOUT_TEXT = "\n".join(topics[k] for k in _KEYS[1::2])  # ... and the other half
EOT = "<|endoftext|>"

# Strings that have broken tokenizers: emoji with joiners and skin tones, combining
# marks, CJK, right-to-left, control characters, odd whitespace, a lone special-like text.
TRICKY = [
    "👩‍👩‍👧‍👦", "👍🏽", "e\u0301", "Z\u0351\u036b\u0343", "日本語のテキスト", "שָׁלוֹם",
    "\x00\x01\x7f", "\r\n\t \u00a0\u2028", "naïve café", "  leading", "trailing  ", "'s'll",
    "<|endo", "x²³ ⅷ ٣", "\ufeff", "\U0010ffff",
]
any_text = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(exclude_categories=("Cs",))),  # no lone surrogates
        st.sampled_from(TRICKY),
    ),
    max_size=8,
).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


def naive_bpe(text: str, num_merges: int, tie_key=lambda pair: pair):
    """Textbook BPE, the specification: recount all pairs over all chunks before each merge.

    The most frequent pair is merged; ties go to the smallest ``tie_key(pair)``.
    Returns the list of merged pairs (merge k creates id 256 + k) and the final chunks.
    """
    chunks = [list(c.encode("utf-8")) for c in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for new_id in range(256, 256 + num_merges):
        counts = Counter()
        for ids in chunks:
            for i in range(len(ids) - 1):
                counts[(ids[i], ids[i + 1])] += 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], tie_key(p)))
        merges.append(best)
        for c, ids in enumerate(chunks):
            out, i = [], 0
            while i < len(ids):
                if tuple(ids[i : i + 2]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            chunks[c] = out
    return merges, chunks


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer().train(TRAIN_TEXT[:60_000], 600, special_tokens=[EOT], progress=False)


# --------------------------------------------------------------------------- helpers


def test_get_pair_counts_worked_example():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([7, 7, 7]) == {(7, 7): 2}  # overlapping pairs all count
    assert get_pair_counts([5]) == {}
    assert get_pair_counts([1, 2], {(1, 2): 3}) == {(1, 2): 4}  # accumulates


def test_merge_worked_examples():
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([5, 5, 5], (5, 5), 6) == [6, 5]  # leftmost occurrence wins
    assert merge([5, 5, 5, 5], (5, 5), 6) == [6, 6]
    assert merge([1, 3, 2], (1, 2), 4) == [1, 3, 2]
    assert merge([], (1, 2), 4) == []


# --------------------------------------------------------------------------- BPE training


def test_textbook_example_aaabdaaabac():
    # Worked by hand. Bytes: a=97 b=98 c=99 d=100, one pre-tokenized chunk.
    # Step 1: counts aa:4 ab:2 bd:1 da:1 ba:1 ac:1 -> (a,a) becomes 256:
    #         [256 97 98 100 256 97 98 97 99]
    # Step 2: (256,97):2 and (97,98):2 tie; the smaller pair (97,98) wins -> 257:
    #         [256 257 100 256 257 97 99]
    # Step 3: (256,257):2 is the only pair seen twice -> 258: [258 100 258 97 99],
    # i.e. Z=aa, Y=ab, X=ZY and "XdXac" as in the textbook (Wikipedia) example.
    tok = BPETokenizer().train("aaabdaaabac", vocab_size=259, progress=False)
    assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.vocab_size == 259


def test_incremental_training_equals_naive_on_english():
    text = TRAIN_TEXT[:15_000]
    tok = BPETokenizer().train(text, 256 + 120, progress=False)
    expected_merges, expected_chunks = naive_bpe(text, 120)
    assert list(tok.merges) == expected_merges
    assert list(tok.merges.values()) == list(range(256, 376))
    # Encoding the training text reproduces the naive trainer's final chunks.
    assert tok.encode(text) == [i for ids in expected_chunks for i in ids]


@SETTINGS
@given(
    text=st.text(alphabet="ab c\né", max_size=80),  # small alphabet: ties everywhere
    num_merges=st.integers(0, 25),
)
def test_incremental_training_equals_naive_with_ties(text, num_merges):
    expected, _ = naive_bpe(text, num_merges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # running out of pairs is expected here
        tok = BPETokenizer().train(text, 256 + num_merges, progress=False)
    assert list(tok.merges) == expected


def test_training_stops_early_with_a_warning():
    # Chunks "ab" and " ab": (a,b) twice -> 256, leaving [256] and [32, 256];
    # then (32,256) once -> 257, leaving two single ids and no pair at all.
    with pytest.warns(UserWarning, match="ran out of pairs after 2 merges"):
        tok = BPETokenizer().train("ab ab", 300, progress=False)
    assert tok.merges == {(97, 98): 256, (32, 256): 257}
    assert tok.vocab_size == 258


# --------------------------------------------------------------------------- round trips


@SETTINGS
@given(text=any_text)
def test_any_string_round_trips(bpe, text):
    ids = bpe.encode(text, allowed_special="none")
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)


@SETTINGS
@given(text=any_text)
def test_untrained_bpe_is_utf8_bytes(text):
    tok = BPETokenizer()
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.decode(tok.encode(text)) == text


@SETTINGS
@given(text=any_text)
def test_pre_tokenization_partitions_the_text(text):
    assert "".join(BPETokenizer(GPT2_SPLIT_PATTERN).pre_tokenize(text)) == text
    assert "".join(BPETokenizer(STDLIB_SPLIT_PATTERN).pre_tokenize(text)) == text


def test_stdlib_pattern_agrees_with_gpt2_pattern_on_english():
    text = HELDOUT_TEXT[:100_000]
    assert BPETokenizer(STDLIB_SPLIT_PATTERN).pre_tokenize(text) == regex.findall(
        GPT2_SPLIT_PATTERN, text
    )


def test_decode_partial_utf8_uses_replacement_character(bpe):
    euro = list("€".encode("utf-8"))  # three bytes
    assert bpe.decode(euro) == "€"
    assert bpe.decode(euro[:2]) == "\ufffd"
    assert bpe.decode(euro[:2] + list(b"ok")) == "\ufffdok"


def test_decode_accepts_a_tensor(bpe):
    ids = bpe.encode("Tensors work too.")
    assert bpe.decode(torch.tensor(ids)) == "Tensors work too."


# --------------------------------------------------------------------------- special tokens


def test_special_tokens_are_single_ids_and_never_learned():
    text = "the cat sat<|endoftext|>the dog ran<|endoftext|>" * 40
    tok = BPETokenizer().train(text, 266, special_tokens=[EOT], progress=False)
    eot = tok.special_tokens[EOT]
    assert eot == 265 == tok.vocab_size - 1  # specials come after the merges
    # Control: trained without declaring the special, BPE does learn from its text.
    plain = BPETokenizer().train(text, 266, progress=False)
    assert any(ord("<") in plain.vocab[i] for pair in plain.merges for i in pair)
    ids = tok.encode("a cat<|endoftext|>b", allowed_special="all")
    assert ids.count(eot) == 1
    assert ids[len(tok.encode("a cat")) :] == [eot, ord("b")]
    assert tok.decode(ids) == "a cat<|endoftext|>b"
    # Merges never produce a special id and never learn from the special's text.
    assert max(tok.merges.values()) < eot
    for pair in tok.merges:
        assert not {ord("<"), ord("|"), ord(">")} & {b for i in pair for b in tok.vocab[i]}
    # Without permission the special text is ordinary text (or an error by default).
    as_text = tok.encode(EOT, allowed_special="none")
    assert eot not in as_text and tok.decode(as_text) == EOT
    with pytest.raises(ValueError, match="allowed_special='all'"):
        tok.encode("x" + EOT)
    assert tok.encode(EOT, allowed_special={EOT}) == [eot]


def test_two_special_tokens_longest_wins():
    tok = BPETokenizer().train("hello world " * 5, 262, special_tokens=["<s>", "<s>x"],
                               progress=False)
    assert tok.special_tokens == {"<s>": 260, "<s>x": 261}
    assert tok.encode("<s>x<s>", allowed_special="all") == [261, 260]


# --------------------------------------------------------------------------- save / load


def test_bpe_save_load_gives_identical_encodings(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["type"] == "BPETokenizer" and len(state["merges"]) == 600 - 256 - 1
    for loaded in (BPETokenizer.load(path), Tokenizer.load(path)):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.merges == bpe.merges
        assert loaded.special_tokens == bpe.special_tokens == {EOT: 599}
        assert loaded.vocab == bpe.vocab
        sample = HELDOUT_TEXT[:5_000] + EOT + " 👍🏽"
        assert loaded.encode(sample, allowed_special="all") == bpe.encode(
            sample, allowed_special="all"
        )


def test_char_and_word_save_load(tmp_path):
    char = CharTokenizer("hello world")
    word = WordTokenizer("the cat sat on the mat.", max_vocab_size=4, lowercase=True)
    for tok in (char, word):
        path = tmp_path / f"{type(tok).__name__}.json"
        tok.save(path)
        loaded = Tokenizer.load(path)
        assert type(loaded) is type(tok)
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.encode("The hollow mat.") == tok.encode("The hollow mat.")
    with pytest.raises(ValueError, match="does not hold a BPETokenizer"):
        BPETokenizer.load(tmp_path / "CharTokenizer.json")


# --------------------------------------------------------------------------- char and word


def test_char_tokenizer_hand_example():
    tok = CharTokenizer("hello")  # <unk>=0, then sorted: e=1 h=2 l=3 o=4
    assert tok.vocab_size == 5 and tok.special_tokens == {"<unk>": 0}
    assert tok.encode("hole!") == [2, 4, 3, 1, 0]
    assert tok.decode([2, 1, 3, 3, 4]) == "hello"
    assert tok.decode(tok.encode("hole!")) == "hole<unk>"  # unseen chars do not round-trip
    assert CharTokenizer(["b", "a"]).encode("ab") == [1, 2]


def test_word_tokenizer_split_and_rejoin():
    text = "Hi, you! Don't (stop) now."
    tok = WordTokenizer(text)
    assert tok.split(text) == ["Hi", ",", "you", "!", "Don't", "(", "stop", ")", "now", "."]
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("Hi,   you")) == "Hi, you"  # whitespace is rebuilt


def test_word_tokenizer_keeps_most_frequent():
    tok = WordTokenizer("c b b a a a d d", max_vocab_size=3)
    assert tok.itos == ["<unk>", "a", "b"]  # a:3, b:2 and d:2 tie -> alphabetical
    assert tok.encode("a b c d") == [1, 2, 0, 0]
    assert tok.decode(tok.encode("a b c d")) == "a b <unk> <unk>"


# --------------------------------------------------------------------------- Hugging Face


def test_pre_tokenization_matches_hugging_face():
    from tokenizers import pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    text = HELDOUT_TEXT[:30_000] + " naïve café 日本語 x²  \n\n  'll 'S end"
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)
    hf_chunks = [bytes(to_byte[c] for c in piece).decode("utf-8") for piece, _ in hf]
    assert BPETokenizer(GPT2_SPLIT_PATTERN).pre_tokenize(text) == hf_chunks


def test_hugging_face_trainer_follows_the_naive_specification():
    # HF's trainer breaks ties by its own token ids: the 256 bytes are numbered in
    # the order of their printable stand-ins (bytes_to_unicode); merges get 256, 257, ...
    # With that tie rule, the naive trainer must reproduce HF's merges exactly; with
    # ours, it reproduces ours (tested above). So the two trainers differ only in ties.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    hf_rank = {b: r for r, b in enumerate(sorted(range(256), key=lambda b: b2u[b]))}
    text = TRAIN_TEXT[:15_000]
    hf = train_hf_bpe(text, 256 + 120)
    hf_merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                 for m in json.loads(hf.to_str())["model"]["merges"]]

    spec, _ = naive_bpe(text, 120, tie_key=lambda p: tuple(hf_rank.get(i, i) for i in p))
    vocab = {i: bytes([i]) for i in range(256)}
    spec_strings = []
    for new_id, (a, b) in enumerate(spec, start=256):
        vocab[new_id] = vocab[a] + vocab[b]
        spec_strings.append(("".join(b2u[x] for x in vocab[a]), "".join(b2u[x] for x in vocab[b])))
    # HF numbers a token by its text; if two merges made the same text, ids would shift.
    assert len(set(vocab.values())) == len(vocab), "corpus makes a duplicate token; pick another"
    assert hf_merges == spec_strings


def test_ours_and_hugging_face_compress_alike():
    train = TRAIN_TEXT[:150_000]
    ours = BPETokenizer().train(train, 1000, special_tokens=[EOT], progress=False)
    hf = train_hf_bpe(train, 1000, special_tokens=[EOT])
    assert hf.token_to_id(EOT) == 0 and ours.special_tokens[EOT] == 999
    held_out = HELDOUT_TEXT[:60_000]
    rows = compare_tokenizers(held_out, {"ours": ours, "hf": hf})
    for name in ("ours", "hf"):
        assert rows[name]["round_trip"], name
        assert rows[name]["bytes_per_token"] >= 2.0, rows  # at least 2x fewer ids than bytes
    # Same algorithm, same data: token counts within 2 % (only tie-breaking differs).
    assert abs(rows["ours"]["tokens"] - rows["hf"]["tokens"]) <= 0.02 * rows["hf"]["tokens"]
    tricky = "".join(TRICKY)
    assert hf.decode(hf.encode(tricky).ids) == tricky
    assert ours.decode(ours.encode(tricky)) == tricky


def test_train_hf_bpe_accepts_an_iterator():
    hf = train_hf_bpe(iter(["hello world"] * 10), 260)
    assert hf.get_vocab_size() == 260
    assert hf.decode(hf.encode("hello world").ids) == "hello world"


def test_docstring_examples():
    import doctest

    import course_utils.tokenization as module

    results = doctest.testmod(module)
    assert results.attempted >= 6 and results.failed == 0


def test_compare_tokenizers_counts():
    text = "héllo, wörld"
    rows = compare_tokenizers(text, {"bytes": BPETokenizer(), "chars": CharTokenizer(text)})
    assert rows["bytes"] == {"tokens": 14, "bytes_per_token": 1.0, "round_trip": True}
    assert rows["chars"]["tokens"] == 12 and rows["chars"]["round_trip"]


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(bpe):
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 256, got 255"):
        BPETokenizer().train("abc", 255)
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 257, got 256"):
        BPETokenizer().train("abc", 256, special_tokens=[EOT])
    with pytest.raises(TypeError, match="vocab_size must be an int, got float"):
        BPETokenizer().train("abc", 300.0)
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        BPETokenizer().train(b"abc", 300)
    with pytest.raises(TypeError, match="special_tokens must be an iterable of str"):
        BPETokenizer().train("abc", 300, special_tokens=EOT)
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer().train("abc", 300, special_tokens=[EOT, EOT])
    with pytest.raises(TypeError, match="text must be a str, got int"):
        bpe.encode(123)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 600\)"):
        bpe.decode([600])
    with pytest.raises(TypeError, match="ids must contain ints"):
        bpe.decode(["a"])
    with pytest.raises(ValueError, match="allowed_special"):
        bpe.encode("x", allowed_special="some")
    with pytest.raises(ValueError, match="not special tokens"):
        bpe.encode("x", allowed_special={"<pad>"})
    with pytest.raises(TypeError, match="text_or_chars must be a str or an iterable"):
        CharTokenizer(5)
    with pytest.raises(ValueError, match="single characters, got 'ab'"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="max_vocab_size must be an int >= 1, got 0"):
        WordTokenizer("a b", max_vocab_size=0)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256, got 100"):
        train_hf_bpe("abc", 100)
