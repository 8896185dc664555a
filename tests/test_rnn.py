"""N-gram counts, the RNN step and the RNN language model, associative recall, context costs.

References: ``torch.nn.RNNCell`` and ``torch.nn.functional.cross_entropy``,
``torch.utils.flop_counter.FlopCounterMode``, ``course_utils.data.associative_recall``
and hand-worked examples.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_utils.rnn import (
    NGramLM,
    RNNLM,
    associative_recall_experiment,
    context_cost_table,
    copy_accuracy,
    copy_batch,
    ngram_counts,
    plateau_exit_step,
    recall_accuracy,
    recall_batch,
    recall_collate,
    rnn_step,
)
from course_utils.data import copy_task
from course_utils.sampling import sample_next
from course_utils.transformer import DecoderOnlyLM, TransformerConfig

WORDS = "the cat sat the cat ran".split()


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one thread is fastest, and kind to a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- n-grams


def test_ngram_counts_hand_worked():
    assert ngram_counts("abab", 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert ngram_counts(WORDS, 2) == {("the", "cat"): 2, ("cat", "sat"): 1, ("sat", "the"): 1, ("cat", "ran"): 1}
    assert ngram_counts([1, 2, 3], 3) == {(1, 2, 3): 1}
    assert ngram_counts([1, 2], 3) == {}
    assert ngram_counts(torch.tensor([4, 4, 4]), 1) == {(4,): 3}


def test_bigram_probabilities_hand_worked():
    mle = NGramLM(WORDS, n=2, k=0)
    assert mle.vocab == ["the", "cat", "sat", "ran"]
    assert mle.prob(["cat"], "sat") == 0.5
    assert mle.prob(["the"], "cat") == 1.0
    assert mle.prob(["the"], "sat") == 0.0
    assert mle.prob(["ran"], "the") == 0.25  # "ran" never starts a bigram: uniform
    laplace = NGramLM(WORDS, n=2, k=1)
    assert laplace.prob(["the", "cat"], "sat") == pytest.approx(2 / 6)  # only the last token counts
    assert laplace.prob(["cat"], "the") == pytest.approx(1 / 6)
    assert laplace.prob(["the"], "cat") == pytest.approx(3 / 6)


def test_trigram_and_smoothing_sum_to_one():
    text = "abracadabra"
    for n, k in ((1, 0.0), (2, 0.5), (3, 1.0), (3, 0.0)):
        lm = NGramLM(text, n=n, k=k)
        for ctx in ("ab", "ra", "ca", "aa"):  # "aa" never occurs
            assert lm.next_token_probs(ctx).sum().item() == pytest.approx(1.0)
    tri = NGramLM(text, n=3, k=0)
    assert tri.prob("ab", "r") == 1.0  # "ab" is always followed by "r"
    # "ra" occurs twice but starts only one trigram ("rac"): the final "ra" has no next token
    assert tri.prob("ra", "c") == 1.0


def test_perplexity_uniform_model_is_vocab_size_and_hand_worked():
    uni = NGramLM("abcd" * 5, n=1, k=0)  # every token 1/4
    assert uni.perplexity("abcdabca") == pytest.approx(4.0)
    unseen = NGramLM("ab", n=2, k=1, vocab="abcdef")  # contexts c..f unseen: uniform over 6
    assert unseen.perplexity("cdefc") == pytest.approx(6.0)
    lm = NGramLM(WORDS, n=2, k=0)
    # the cat sat: P(cat|the) = 1, P(sat|cat) = 1/2 -> exp(-(0 + log 1/2) / 2) = sqrt(2)
    assert lm.perplexity(["the", "cat", "sat"]) == pytest.approx(math.sqrt(2))
    assert lm.perplexity(["the", "sat"]) == math.inf


def test_ngram_generate():
    lm = NGramLM("abcabc", n=2, k=0)
    assert lm.generate("a", 5) == list("abcabc")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = NGramLM(WORDS, n=2, k=1).generate(["the"], 10, do_sample=True, generator=g1)
    s2 = NGramLM(WORDS, n=2, k=1).generate(["the"], 10, do_sample=True, generator=g2)
    assert s1 == s2 and len(s1) == 11 and set(s1) <= set(WORDS)
    # with k = 0 sampling never picks a probability-0 token
    g = torch.Generator().manual_seed(0)
    out = NGramLM(WORDS, n=2, k=0).generate(["the"], 30, do_sample=True, generator=g)
    assert all((a, b) in ngram_counts(WORDS, 2) or a == "ran" for a, b in zip(out, out[1:]))


def test_ngram_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        NGramLM(WORDS, n=0)
    with pytest.raises(ValueError, match="k must be"):
        NGramLM(WORDS, k=-1)
    with pytest.raises(ValueError, match="at least n=3"):
        NGramLM(["a", "b"], n=3)
    with pytest.raises(ValueError, match="vocab must contain"):
        NGramLM("abc", vocab="ab")
    lm = NGramLM(WORDS, n=3)
    with pytest.raises(ValueError, match="context must hold at least n - 1 = 2 tokens, got 1"):
        lm.prob(["the"], "cat")
    with pytest.raises(ValueError, match="token must be in the vocabulary"):
        lm.prob(["the", "cat"], "dog")
    with pytest.raises(TypeError, match="tokens must be a sequence"):
        ngram_counts(5, 2)


# ----------------------------------------------------------------------------- the RNN step


def test_rnn_step_matches_rnn_cell():
    torch.manual_seed(0)
    cell = torch.nn.RNNCell(5, 7)
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    ours = rnn_step(x, h, cell.weight_ih.T, cell.weight_hh.T, cell.bias_ih + cell.bias_hh)
    torch.testing.assert_close(ours, cell(x, h), rtol=1e-5, atol=1e-6)
    # the docstring's one-number example
    one = rnn_step(torch.tensor([[0.5]]), torch.tensor([[0.5]]), torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1))
    assert one.item() == pytest.approx(math.tanh(1.0))


def test_rnn_step_bad_shapes():
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    with pytest.raises(ValueError, match=r"W_xh must have shape \(5, 7\).*got \(7, 5\)"):
        rnn_step(x, h, torch.randn(7, 5), torch.randn(7, 7), torch.zeros(7))
    with pytest.raises(ValueError, match="b_h must have 1 dimensions"):
        rnn_step(x, h, torch.randn(5, 7), torch.randn(7, 7), torch.zeros(1, 7))
    with pytest.raises(ValueError, match=r"h_prev must have shape \(3, 7\)"):
        rnn_step(x, torch.randn(2, 7), torch.randn(5, 7), torch.randn(7, 7), torch.zeros(7))


# ----------------------------------------------------------------------------- the RNN language model


def test_rnnlm_is_rnn_step_unrolled():
    torch.manual_seed(0)
    model = RNNLM(11, 6, 8, n_layer=1, cell="rnn").eval()
    ids = torch.randint(11, (2, 5))
    logits, _ = model(ids)
    r = model.rnn
    h = torch.zeros(2, 8)
    for t in range(5):
        h = rnn_step(model.wte(ids[:, t]), h, r.weight_ih_l0.T, r.weight_hh_l0.T, r.bias_ih_l0 + r.bias_hh_l0)
        torch.testing.assert_close(logits[:, t], model.lm_head(h), rtol=1e-5, atol=1e-5)


def test_rnnlm_num_parameters_hand_counted():
    assert RNNLM(10, 4, 8).num_parameters() == 10 * 4 + (8 * 4 + 8 * 8 + 8 + 8) + (8 * 10 + 10)
    # LSTM: four gates per layer; layer 2 reads the 8-wide output of layer 1
    lstm = 10 * 4 + 4 * (8 * 4 + 8 * 8 + 16) + 4 * (8 * 8 + 8 * 8 + 16) + (8 * 10 + 10)
    assert RNNLM(10, 4, 8, n_layer=2, cell="lstm").num_parameters() == lstm


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_rnnlm_loss_is_shifted_cross_entropy(cell):
    torch.manual_seed(1)
    model = RNNLM(13, 8, 16, n_layer=2, cell=cell)
    ids = torch.randint(13, (3, 7))
    labels = ids.clone()
    labels[0, 3] = -100
    labels[2, 0] = -100  # position 0 is never a target anyway
    logits, loss = model(ids, labels=labels)
    assert logits.shape == (3, 7, 13)
    logp = torch.log_softmax(logits, dim=-1)
    terms = [-logp[b, t, labels[b, t + 1]] for b in range(3) for t in range(6) if labels[b, t + 1] != -100]
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)
    assert len(terms) == 3 * 6 - 1
    _, no_loss = model(ids)
    assert no_loss is None


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_rnnlm_is_causal(cell):
    torch.manual_seed(2)
    model = RNNLM(13, 8, 16, n_layer=2, cell=cell).eval()
    ids = torch.randint(13, (2, 9))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 13
    a, b = model(ids)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :5], b[:, :5])  # positions before 5 cannot see it
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4  # positions from 5 on do


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_state_carried_equals_reading_at_once(cell):
    torch.manual_seed(3)
    model = RNNLM(13, 8, 16, n_layer=2, cell=cell).eval()
    ids = torch.randint(13, (2, 10))
    whole, _ = model.forward_with_state(ids)
    first, state = model.forward_with_state(ids[:, :4])
    second, _ = model.forward_with_state(ids[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_generate_with_state_equals_full_recompute(cell):
    torch.manual_seed(4)
    model = RNNLM(17, 8, 24, n_layer=2, cell=cell, dropout=0.1)
    prompt = torch.randint(17, (3, 4))
    out = model.generate(prompt, 12)
    assert model.training  # restored
    model.eval()
    ref = prompt
    for _ in range(12):  # no state: read the whole sequence again at every step
        ref = torch.cat([ref, model(ref)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    # sampling: the same draws as sample_next on recomputed logits with an identically seeded generator
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out = model.generate(prompt, 8, do_sample=True, temperature=1.5, top_k=5, generator=g1)
    ref = prompt
    for _ in range(8):
        nxt = sample_next(model(ref)[0][:, -1], True, 1.5, 5, None, g2)
        ref = torch.cat([ref, nxt[:, None]], dim=1)
    assert torch.equal(out, ref)
    assert model.generate(prompt, 0).equal(prompt)


def test_rnnlm_bad_input():
    with pytest.raises(ValueError, match=r"cell must be one of \('rnn', 'lstm'\), got 'gru'"):
        RNNLM(10, 4, 8, cell="gru")
    with pytest.raises(ValueError, match="n_layer must be an int >= 1, got 0"):
        RNNLM(10, 4, 8, n_layer=0)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        RNNLM(10, 4, 8, dropout=1.0)
    model = RNNLM(10, 4, 8)
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 10\), got values from 0 to 10"):
        model(torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\)"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="labels must have the shape of input_ids"):
        model(torch.tensor([[1, 2]]), labels=torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="attention_mask must pad on the right"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        model.generate(torch.tensor([[1]]), 3, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        model.generate(torch.tensor([[1]]), -1)


def test_right_padding_does_not_change_real_logits():
    torch.manual_seed(5)
    model = RNNLM(10, 4, 8, cell="lstm").eval()
    ids = torch.tensor([[1, 2, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    torch.testing.assert_close(model(ids, attention_mask=mask)[0][:, :3], model(ids[:, :3])[0])


# ----------------------------------------------------------------------------- associative recall


def test_recall_batch_layout_and_answer():
    g = torch.Generator().manual_seed(0)
    n, V = 5, 24
    batch = recall_batch(50, n_pairs=n, vocab_size=V, generator=g)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (50, 2 * n + 2)
    assert (labels[:, :-1] == -100).all()
    for row, lab in zip(ids.tolist(), labels.tolist()):
        keys, values, query, answer = row[0:2 * n:2], row[1:2 * n:2], row[2 * n], row[2 * n + 1]
        assert len(set(keys)) == n and all(0 <= k < V // 2 for k in keys)
        assert all(V // 2 <= v < V for v in values)
        assert query in keys
        assert answer == values[keys.index(query)] == lab[-1]


def test_recall_collate_reads_data_associative_recall():
    from course_utils.data import associative_recall

    ds = associative_recall(6, n_pairs=3, vocab_size=16, seed=1)
    rows = [ds[i] for i in range(6)]
    for batch in (recall_collate(rows), recall_collate(ds[:6])):
        assert batch["input_ids"].shape == (6, 8)
        for row, ids, lab in zip(rows, batch["input_ids"].tolist(), batch["labels"].tolist()):
            keys, values, query = row["input_ids"][0:6:2], row["input_ids"][1:6:2], row["input_ids"][6]
            assert ids[:7] == row["input_ids"] and ids[7] == values[keys.index(query)] == row["target"]
            assert lab == [-100] * 7 + [row["target"]]
    with pytest.raises(ValueError, match="same length"):
        recall_collate([{"input_ids": [1, 9, 1], "target": 9}, {"input_ids": [1], "target": 9}])


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_recall_loss_scores_the_prediction_at_the_query(kind):
    """Both models shift labels inside, so the loss is exactly the cross-entropy of logits[:, -2] vs the answer."""
    torch.manual_seed(6)
    batch = recall_batch(8, n_pairs=4, vocab_size=20, generator=torch.Generator().manual_seed(1))
    if kind == "rnn":
        model = RNNLM(20, 8, 16, cell="lstm")
    else:
        model = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=10, n_layer=1, n_head=2, n_embd=16))
    logits, loss = model(**batch)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, -2], batch["labels"][:, -1]))
    # the answer itself (the last input) is not seen by the scored prediction
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][:, -1] = 0
    torch.testing.assert_close(model(other["input_ids"])[0][:, -2], logits[:, -2])
    acc = recall_accuracy(model, batch)
    assert acc == (logits[:, -2].argmax(-1) == batch["labels"][:, -1]).float().mean().item()


def test_recall_bad_input():
    with pytest.raises(ValueError, match=r"n_pairs must be <= vocab_size // 2 = 4 \(keys are distinct\), got 5"):
        recall_batch(2, n_pairs=5, vocab_size=8)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        recall_batch(0)


def test_tiny_experiment_returns_documented_keys():
    res = associative_recall_experiment(
        n_pairs=2, vocab_size=8, time_budget_s=0.3, models=("lstm", "transformer"), seed=0, progress=False,
        device="cpu", batch_size=8, n_eval=20, log_every=2,
        sizes={"lstm": {"n_embd": 8, "n_hidden": 8}, "transformer": {"n_embd": 8, "n_head": 2}})
    assert set(res) == {"lstm", "transformer"}
    for r in res.values():
        assert set(r) == {"accuracy", "steps", "params", "seconds", "final_loss", "loss_curve"}
        assert 0.0 <= r["accuracy"] <= 1.0 and r["steps"] >= 1 and r["seconds"] >= 0.3
        assert r["loss_curve"]["step"][-1] == r["steps"]
        assert len(r["loss_curve"]["step"]) == len(r["loss_curve"]["loss"]) == len(r["loss_curve"]["time"])
    assert res["lstm"]["params"] == RNNLM(8, 8, 8, n_layer=2, cell="lstm").num_parameters()


def test_experiment_bad_input():
    with pytest.raises(ValueError, match="models must be a non-empty sequence of names"):
        associative_recall_experiment(models=("gru",), progress=False)
    with pytest.raises(ValueError, match="time_budget_s must be a number > 0, got 0"):
        associative_recall_experiment(time_budget_s=0, progress=False)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1, got 0"):
        associative_recall_experiment(max_steps=0, progress=False)
    with pytest.raises(ValueError, match=r"scheme must be one of \('gpt2', 'lecun'\), got 'zeros'"):
        associative_recall_experiment(time_budget_s=1, models=("transformer",), progress=False,
                                      sizes={"transformer": {"init": "zeros"}})


def test_max_steps_stops_training_at_that_count():
    res = associative_recall_experiment(
        n_pairs=2, vocab_size=8, time_budget_s=600, max_steps=7, models=("lstm", "transformer"), progress=False,
        device="cpu", batch_size=4, n_eval=10, log_every=3,
        sizes={"lstm": {"n_embd": 8, "n_hidden": 8}, "transformer": {"n_embd": 8, "n_head": 2}})
    for r in res.values():
        assert r["steps"] == 7 and r["loss_curve"]["step"] == [3, 6, 7]


def test_step_budget_gives_the_same_race_under_two_thread_counts():
    """Equal updates, not equal seconds: the chapter's races must end the same on a machine twice as fast.
    Changing the thread count changes the speed; losses, accuracies and plateau exits must not change."""
    kwargs = dict(n_pairs=2, vocab_size=8, max_steps=40, models=("lstm", "transformer"), seed=0, progress=False,
                  device="cpu", batch_size=8, n_eval=50, log_every=5,
                  sizes={"lstm": {"n_embd": 8, "n_hidden": 16}, "transformer": {"n_embd": 16, "n_head": 2}})
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs.append(associative_recall_experiment(**kwargs))
    for name in ("lstm", "transformer"):
        one, two = runs[0][name], runs[1][name]
        assert one["steps"] == two["steps"] == 40
        assert one["accuracy"] == two["accuracy"]
        assert one["loss_curve"]["step"] == two["loss_curve"]["step"]
        assert one["loss_curve"]["loss"] == pytest.approx(two["loss_curve"]["loss"], abs=1e-5)
        assert plateau_exit_step(one["loss_curve"], math.log(2)) == plateau_exit_step(two["loss_curve"], math.log(2))


def test_plateau_exit_step_by_hand():
    curve = {"step": [10, 20, 30, 40], "time": [0.1, 0.2, 0.3, 0.4], "loss": [2.5, 2.1, 1.1, 0.2]}
    assert plateau_exit_step(curve, math.log(8)) == 40  # log 8 = 2.08: half of it is 1.04, first passed at 40
    assert plateau_exit_step(curve, math.log(8), fraction=0.6) == 30
    assert plateau_exit_step(curve, 0.3) is None
    with pytest.raises(ValueError, match="curve must be a dict with lists 'step' and 'loss'"):
        plateau_exit_step({"time": [1.0], "loss": [1.0]}, 1.0)
    with pytest.raises(ValueError, match=r"level must be a finite number > 0, got 0"):
        plateau_exit_step(curve, 0)


def test_experiment_needs_a_budget():
    with pytest.raises(ValueError, match="max_steps=None needs a finite time_budget_s"):
        associative_recall_experiment(max_steps=None, progress=False)


def test_recall_transformer_of_the_chapter_learns_the_lookup_with_8_pairs():
    """The claim of chapter 2, at a fixed step count so it does not depend on the machine's speed:
    the default transformer (RECALL_MODELS, init "lecun") leaves the log(8) plateau and answers
    held-out queries. A model that only guessed among the values present would score about 1/8."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = associative_recall_experiment(models=("transformer",), time_budget_s=900, max_steps=3000,
                                            progress=False, device="cpu", n_eval=1000)["transformer"]
    finally:
        torch.set_num_threads(threads)
    assert res["steps"] == 3000
    assert res["accuracy"] > 0.9, res["loss_curve"]["loss"][::20]


# ----------------------------------------------------------------------------- context costs


def test_context_cost_table():
    lstm = RNNLM(50, 16, 32, n_layer=2, cell="lstm")
    cfg = TransformerConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=16)
    rows = context_cost_table([1, 8, 64], lstm, cfg)
    assert [r["context_length"] for r in rows] == [1, 8, 64]
    # the state an LSTM carries: h and c of each layer, as nn.LSTM returns them
    _, (h, c) = lstm.rnn(torch.randn(1, 3, 16))
    assert rows[0]["rnn_state_bytes"] == (h.numel() + c.numel()) * 4
    assert len({r["rnn_state_bytes"] for r in rows}) == 1 and len({r["rnn_flops_per_token"] for r in rows}) == 1
    # hand-worked LSTM step: 2 * 4 gates * (16*32 + 32*32) + 2 * 4 * (32*32 + 32*32) + head 2 * 32 * 50
    assert rows[0]["rnn_flops_per_token"] == 8 * (512 + 1024) + 8 * 2048 + 3200
    # KV cache: a key and a value of width 16 per layer per token
    assert [r["attn_kv_cache_bytes"] for r in rows] == [2 * 2 * t * 16 * 4 for t in (1, 8, 64)]
    assert [r["attn_score_bytes"] for r in rows] == [2 * t * t * 4 for t in (1, 8, 64)]
    # one cached decoding step at context 8: the weight matmuls counted by FlopCounterMode, plus attention 4 T C L
    model = DecoderOnlyLM(cfg).eval()
    caches = model._new_caches(2, 1, "cpu")
    model(torch.randint(50, (1, 7)), caches=caches)
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(50, (1, 1)), caches=caches)
    matmuls = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "attention" not in str(op))
    assert rows[1]["attn_flops_per_token"] == matmuls + 4 * 8 * 16 * 2
    # whole sequence: per-token costs for contexts 1..T added up
    for r in rows:
        t = r["context_length"]
        assert r["rnn_sequence_flops"] == t * r["rnn_flops_per_token"]
        assert r["attn_sequence_flops"] == sum(rows[0]["attn_flops_per_token"] + 4 * 2 * 16 * (s - 1)
                                               for s in range(1, t + 1))


def test_context_cost_table_bad_input():
    cfg = TransformerConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=16)
    rnn = {"vocab_size": 50, "n_embd": 16, "n_hidden": 32, "n_layer": 1, "cell": "gru"}
    with pytest.raises(ValueError, match=r"rnn\['cell'\] must be one of"):
        context_cost_table([8], rnn, cfg)
    with pytest.raises(ValueError, match=r"context_lengths\[1\] must be an int >= 1, got 0"):
        context_cost_table([8, 0], RNNLM(50, 16, 32), cfg)
    with pytest.raises(TypeError, match="transformer must be a TransformerConfig"):
        context_cost_table([8], RNNLM(50, 16, 32), "gpt")


# ----------------------------------------------------------------------------- copying


def test_copy_batch_layout_by_hand():
    batch = copy_batch(3, length=4, vocab_size=6, generator=torch.Generator().manual_seed(0))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (3, 9)
    assert ids[:, 4].tolist() == [5, 5, 5]  # the separator is the last id
    assert ids[:, :4].max().item() <= 4  # symbols never use the separator's id
    assert torch.equal(ids[:, 5:], ids[:, :4])  # the copy
    assert (labels[:, :5] == -100).all() and torch.equal(labels[:, 5:], ids[:, :4])
    # same layout as course_utils.data.copy_task
    row = copy_task(1, length=4, vocab_size=6, seed=0)[0]
    assert len(row["input_ids"]) == 9 and row["input_ids"][4] == 5
    assert row["labels"][:5] == [-100] * 5


def test_copy_accuracy_counts_only_the_copied_tokens():
    batch = copy_batch(2, length=3, vocab_size=5, generator=torch.Generator().manual_seed(1))

    class Oracle(torch.nn.Module):  # predicts the true next token everywhere except at one copied position
        def forward(self, input_ids):
            nxt = torch.roll(input_ids, -1, dims=1)
            nxt[0, 4] = (nxt[0, 4] + 1) % 5  # position 4 predicts token 5, the 2nd copied token of row 0: wrong
            nxt[:, 0] = (nxt[:, 0] + 1) % 5  # position 0 is not scored: errors there must not count
            return (F.one_hot(nxt, 5).float(), None)

    assert copy_accuracy(Oracle(), batch) == pytest.approx(5 / 6)


def test_tiny_copy_experiment_and_bad_task():
    res = associative_recall_experiment(
        n_pairs=2, vocab_size=8, time_budget_s=0.3, models=("transformer",), seed=0, progress=False,
        device="cpu", batch_size=8, n_eval=20, log_every=2, task="copy",
        sizes={"transformer": {"n_embd": 8, "n_head": 2}})
    assert set(res) == {"transformer"} and 0.0 <= res["transformer"]["accuracy"] <= 1.0
    with pytest.raises(ValueError, match=r"task must be one of \('recall', 'copy'\), got 'sort'"):
        associative_recall_experiment(task="sort", progress=False)
