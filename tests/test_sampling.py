"""Tests for course_utils.sampling: agreement with Hugging Face's logits warpers,
a hand-worked example, sampled frequencies and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from course_utils.sampling import (
    apply_temperature,
    decoding_loop,
    distinct_n,
    filtered_distribution,
    repetition_rate,
    sample_next,
    top_k_filter,
    top_p_filter,
)

SHAPES = [(1, 5), (4, 17), (3, 2, 50), (64,)]


def random_logits(shape, seed: int, ties: bool) -> torch.Tensor:
    """Gaussian logits; with ``ties`` rounded to a handful of values so many are equal."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(shape, generator=g)
    return x.round() if ties else x


def hf(processor, logits: torch.Tensor) -> torch.Tensor:
    """Run a Hugging Face logits processor on (..., V) logits (it wants (B, V))."""
    flat = logits.reshape(-1, logits.shape[-1])
    dummy_ids = torch.zeros(flat.shape[0], 1, dtype=torch.long)
    return processor(dummy_ids, flat).reshape(logits.shape)


def assert_same_filtering(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # The removed positions must be exactly the same set ...
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs))
    # ... and the kept values identical (same arithmetic as HF, so exact).
    assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------- vs Hugging Face


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_hf(shape, temperature):
    logits = random_logits(shape, seed=1, ties=False)
    assert torch.equal(apply_temperature(logits, temperature), hf(TemperatureLogitsWarper(temperature), logits))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 50, 100])
def test_top_k_matches_hf_including_ties(shape, ties, k):
    for seed in range(5):
        logits = random_logits(shape, seed=seed, ties=ties)
        assert_same_filtering(top_k_filter(logits, k), hf(TopKLogitsWarper(top_k=k), logits))


def test_top_k_keeps_ties_with_kth_value():
    # Hand-worked: the 2nd largest value 1.0 appears twice, both survive k=2.
    logits = torch.tensor([3.0, 1.0, 1.0, 0.0, 1.0, -2.0])
    out = top_k_filter(logits, 2)
    assert torch.isneginf(out).tolist() == [False, False, False, True, False, True]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_top_p_matches_hf_including_ties(shape, ties, p):
    for seed in range(5):
        logits = random_logits(shape, seed=seed, ties=ties)
        assert_same_filtering(top_p_filter(logits, p), hf(TopPLogitsWarper(top_p=p), logits))


def test_top_p_always_keeps_the_most_likely_token():
    # A tiny p: 1 - p rounds to 1.0 in float32, so every cumulative probability is
    # <= 1 - p and only the min_tokens_to_keep=1 rule saves the most likely token.
    logits = torch.tensor([[10.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    out = top_p_filter(logits, 1e-8)
    assert torch.equal(out, hf(TopPLogitsWarper(top_p=1e-8), logits))
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1]
    assert torch.isfinite(out[0]).tolist() == [True, False, False, False]


def test_top_p_removes_cumulative_probability_equal_to_one_minus_p():
    # Four equal tokens: sorted cumulative probabilities 0.25, 0.5, 0.75, 1 (exact in
    # float). "Remove while <= 1 - p": p = 0.5 keeps 2 tokens, p = 0.75 keeps 3.
    logits = torch.zeros(1, 4)
    for p, kept in [(0.5, 2), (0.75, 3), (0.25, 1)]:
        out = top_p_filter(logits, p)
        assert int(torch.isfinite(out).sum()) == kept
        assert torch.equal(out, hf(TopPLogitsWarper(top_p=p), logits))


def test_top_p_one_is_a_no_op_like_generate():
    # generate() adds TopPLogitsWarper only when top_p < 1; with p = 1 nothing is removed.
    logits = random_logits((4, 30), seed=3, ties=True)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert torch.equal(top_p_filter(logits, 1.0), hf(TopPLogitsWarper(top_p=1.0), logits))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(0.7, 5, 0.9), (1.5, 3, 0.5), (2.0, None, 0.7), (0.5, 10, None), (1.0, 1, 0.3), (3.0, 40, 0.95)],
)
def test_combined_order_matches_hf_processor_chain(ties, temperature, top_k, top_p):
    chain = [TemperatureLogitsWarper(temperature)]
    if top_k is not None:
        chain.append(TopKLogitsWarper(top_k=top_k))
    if top_p is not None:
        chain.append(TopPLogitsWarper(top_p=top_p))
    processors = LogitsProcessorList(chain)
    for seed in range(5):
        logits = random_logits((6, 40), seed=seed, ties=ties)
        ids = torch.zeros(6, 1, dtype=torch.long)
        expected = torch.softmax(processors(ids, logits.clone()), dim=-1)
        probs = filtered_distribution(logits, temperature, top_k, top_p)
        assert torch.equal(probs == 0, expected == 0)
        torch.testing.assert_close(probs, expected, rtol=0, atol=0)


def test_worked_example_order_matters():
    # FACTS.md: logits [3, 2, 1, 0.5, -1]; temperature 2 then top-p 0.7 keeps 3 tokens,
    # top-p 0.7 then temperature 2 keeps 2.
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.5, -1.0]])
    probs = filtered_distribution(logits, temperature=2.0, top_p=0.7)
    assert torch.nonzero(probs[0]).flatten().tolist() == [0, 1, 2]
    # Kept probabilities by hand: softmax of [1.5, 1.0, 0.5].
    e = [math.exp(1.5), math.exp(1.0), math.exp(0.5)]
    expected = [x / sum(e) for x in e] + [0.0, 0.0]
    assert probs[0].tolist() == pytest.approx(expected, abs=1e-6)

    other_order = apply_temperature(top_p_filter(logits, 0.7), 2.0)
    assert torch.isfinite(other_order[0]).tolist() == [True, True, False, False, False]


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (0.8, 6, 0.9), (1.7, None, 0.6), (1.2, 3, None)],
)
def test_sampled_frequencies_match_filtered_distribution(temperature, top_k, top_p):
    n_draws, vocab = 20_000, 12
    logits = random_logits((1, vocab), seed=7, ties=False)
    expected = filtered_distribution(logits, temperature, top_k, top_p)[0].double()
    gen = torch.Generator().manual_seed(1234)
    draws = sample_next(
        logits.expand(n_draws, vocab), do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
        generator=gen,
    )
    assert draws.shape == (n_draws,) and draws.dtype == torch.long
    counts = torch.bincount(draws, minlength=vocab).double()
    kept = expected > 0
    assert counts[~kept].sum() == 0  # never a filtered token
    mean = n_draws * expected
    std = torch.sqrt(n_draws * expected * (1 - expected))
    assert torch.all((counts - mean).abs() <= 5 * std + 1e-9), (counts, mean)
    if top_k is not None and top_p is None:
        assert int(kept.sum()) == top_k  # no ties in Gaussian logits


def test_seeded_generator_repeats_draws():
    logits = random_logits((50, 20), seed=2, ties=False)
    a = sample_next(logits, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))
    b = sample_next(logits, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_greedy_is_argmax_first_index_on_ties():
    logits = random_logits((40, 9), seed=4, ties=True)
    expected = np.argmax(logits.numpy(), axis=-1)  # numpy also picks the first maximum
    out = sample_next(logits, do_sample=False, temperature=0.5, top_k=3, top_p=0.5)
    assert out.tolist() == expected.tolist()


def test_half_precision_logits_are_upcast_like_generate():
    logits = random_logits((3, 25), seed=5, ties=False)
    probs = filtered_distribution(logits.to(torch.bfloat16), 0.9, 5, 0.8)
    assert probs.dtype == torch.float32
    ref = LogitsProcessorList([TemperatureLogitsWarper(0.9), TopKLogitsWarper(5), TopPLogitsWarper(0.8)])
    expected = torch.softmax(ref(torch.zeros(3, 1, dtype=torch.long), logits.to(torch.bfloat16).float()), -1)
    assert torch.equal(probs, expected)


# --------------------------------------------------------------------------- invalid settings


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises_with_range(bad):
    logits = torch.zeros(1, 4)
    for call in (
        lambda: apply_temperature(logits, bad),
        lambda: sample_next(logits, do_sample=True, temperature=bad),
        lambda: filtered_distribution(logits, temperature=bad),
    ):
        with pytest.raises(ValueError, match=r"temperature must be a (finite )?number > 0 "
                                             r"\(use do_sample=False for greedy decoding\), got"):
            call()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_bad_top_p_raises_with_range(bad):
    logits = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        top_p_filter(logits, bad)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        sample_next(logits, do_sample=True, top_p=bad)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_top_k_raises_with_range(bad):
    logits = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 1 \(or None for no top-k\), got -?\d"):
        top_k_filter(logits, bad)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 1"):
        sample_next(logits, do_sample=False, top_k=bad)


@pytest.mark.parametrize("bad, type_name", [(2.5, "float"), (2.0, "float"), (True, "bool"), ("5", "str")])
def test_top_k_of_the_wrong_type_is_a_type_error(bad, type_name):
    logits = torch.zeros(1, 4)
    with pytest.raises(TypeError, match=rf"top_k must be an int \(or None for no top-k\), got {type_name}"):
        top_k_filter(logits, bad)
    with pytest.raises(TypeError, match="top_k must be an int"):
        sample_next(logits, do_sample=False, top_k=bad)


def test_bad_logits_shape_and_type():
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        sample_next(torch.zeros(5))
    with pytest.raises(TypeError, match="floating-point"):
        top_k_filter(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        apply_temperature([1.0, 2.0], 1.0)


# --------------------------------------------------------------------------- metrics


def test_repetition_rate_hand_worked():
    assert repetition_rate([1, 2, 1, 2, 1], n=2) == pytest.approx(0.5)  # 12 21 12 21
    assert repetition_rate([1, 2, 1, 2, 1], n=1) == pytest.approx(1 - 2 / 5)
    assert repetition_rate("abcabc", n=3) == pytest.approx(0.25)  # abc bca cab abc
    assert repetition_rate(torch.tensor([5, 6, 7, 8]), n=2) == 0.0
    assert repetition_rate([7] * 10, n=4) == pytest.approx(1 - 1 / 7)
    assert repetition_rate([1, 2], n=4) == 0.0  # no 4-grams at all


def test_distinct_n_hand_worked():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], n=2) == pytest.approx(0.75)
    assert distinct_n([[1, 2, 3], [1, 2, 4]], n=1) == pytest.approx(4 / 6)
    assert distinct_n([[1, 1, 1, 1]], n=1) == pytest.approx(0.25)
    assert distinct_n(["the cat", "the dog"], n=4) == pytest.approx(7 / 8)  # 8 four-grams, only 'the ' twice
    assert distinct_n([[1]], n=2) == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        repetition_rate([1, 2, 3], n=0)
    with pytest.raises(TypeError, match="n must be an int, got float"):
        distinct_n([[1, 2, 3]], n=1.5)
    with pytest.raises(TypeError, match=r"sequences\[0\]"):
        distinct_n([1, 2, 3], n=1)  # one flat sequence instead of a list of them
    with pytest.raises(ValueError, match="1-D"):
        repetition_rate(torch.zeros(2, 3, dtype=torch.long))


# --------------------------------------------------------------------------- the decoding loop


def counting_model(vocab: int = 10):
    """next_logits for a model whose next token is always (last token + 1) % vocab; it logs its calls."""
    calls = []

    def next_logits(ids):
        calls.append(ids.clone())
        return torch.nn.functional.one_hot((ids[:, -1] + 1) % vocab, vocab).float() * 10.0  # (B, V)

    return next_logits, calls


def test_decoding_loop_docstring_example_and_calls():
    next_logits, calls = counting_model()
    out = decoding_loop(next_logits, torch.tensor([[1, 2]]), 3)
    assert out.tolist() == [[1, 2, 3, 4, 5]] and out.dtype == torch.long
    # called with the prompt, then once per new token except the last: never for nothing
    assert [c.tolist() for c in calls] == [[[1, 2]], [[1, 2, 3]], [[1, 2, 3, 4]]]
    assert decoding_loop(next_logits, torch.tensor([[7]]), 0).tolist() == [[7]]
    assert len(calls) == 3  # max_new_tokens=0 does not ask the model


def test_decoding_loop_eos_pads_finished_rows_and_stops():
    next_logits, _ = counting_model()
    out = decoding_loop(next_logits, torch.tensor([[3], [5]]), 6, eos_token_id=6, pad_token_id=0)
    # row 0 writes 4 5 6 then pads; row 1 writes 6 at once; all finished after 3 tokens
    assert out.tolist() == [[3, 4, 5, 6], [5, 6, 0, 0]]


def test_decoding_loop_samples_like_sample_next():
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    out = decoding_loop(lambda ids: logits, torch.zeros(3, 1, dtype=torch.long), 5, do_sample=True,
                        temperature=0.7, top_k=4, top_p=0.9, generator=g1)
    expected = [sample_next(logits, True, 0.7, 4, 0.9, g2) for _ in range(5)]
    assert torch.equal(out[:, 1:], torch.stack(expected, dim=1))


def test_decoding_loop_checks_its_arguments_before_calling_the_model():
    next_logits, calls = counting_model()
    prompt = torch.tensor([[1]])
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        decoding_loop(next_logits, prompt, -1)
    with pytest.raises(TypeError, match="max_new_tokens must be an int, got float"):
        decoding_loop(next_logits, prompt, 2.0)
    with pytest.raises(ValueError, match="temperature"):
        decoding_loop(next_logits, prompt, 2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):  # checked even for greedy decoding, as sample_next does
        decoding_loop(next_logits, prompt, 2, temperature=-1.0)
    with pytest.raises(ValueError, match="eos_token_id must be an int >= 0"):
        decoding_loop(next_logits, prompt, 2, eos_token_id=-1)
    assert calls == []
    with pytest.raises(ValueError, match=r"eos_token_id must be None or in \[0, 10\)"):
        decoding_loop(next_logits, prompt, 2, eos_token_id=10)
