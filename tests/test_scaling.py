"""course_utils.scaling: compute against published budgets, the loss law fitted to data made by
known laws, optima against brute-force searches, the shipped sweep against its own metadata,
and one point of the sweep re-made."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from course_utils.scaling import (
    PF_DAY,
    SWEEP_COMMAND,
    LossLaw,
    SweepSettings,
    compute_optimal,
    fit_isoflop,
    fit_loss_law,
    load_sweep,
    petaflop_s_days,
    run_point,
    sweep,
    sweep_data,
    training_flops,
)
from course_utils.transformer import DecoderOnlyLM, TransformerConfig

#: Hoffmann et al. (2022), eq. 10: their fit of L(N, D) = E + A / N**alpha + B / D**beta.
CHINCHILLA = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


# ----------------------------------------------------------------------------- compute


def test_gpt3_budget_in_flops_and_petaflop_s_days():
    # Brown et al. (2020), table D.1: GPT-3 175B, 300B tokens, 3.14e23 FLOPs = 3.64e3 petaflop/s-days
    assert training_flops(175e9, 300e9) == pytest.approx(3.15e23, rel=1e-12)
    assert PF_DAY == 8.64e19
    assert petaflop_s_days(3.14e23) == pytest.approx(3.64e3, rel=5e-3)
    assert petaflop_s_days(PF_DAY) == 1.0


def test_compute_optimal_splits_the_budget_at_the_ratio():
    n, d = compute_optimal(6 * 70e9 * 1.4e12)  # Chinchilla: 70B parameters, 1.4T tokens, 20 per parameter
    assert n == pytest.approx(70e9, rel=1e-12) and d == pytest.approx(1.4e12, rel=1e-12)
    for flops, ratio in [(1e18, 20.0), (3.14e23, 20.0), (5e11, 1.0), (2e15, 200.0)]:
        n, d = compute_optimal(flops, ratio)
        assert 6 * n * d == pytest.approx(flops, rel=1e-12)
        assert d / n == pytest.approx(ratio, rel=1e-12)
    assert compute_optimal(6.0, 1.0) == (1.0, 1.0)


@pytest.mark.parametrize("call, error", [
    (lambda: training_flops(0, 1e9), ValueError),
    (lambda: training_flops(1e9, -1), ValueError),
    (lambda: training_flops("1e9", 1e9), TypeError),
    (lambda: training_flops(True, 1e9), TypeError),
    (lambda: petaflop_s_days(-1.0), ValueError),
    (lambda: petaflop_s_days(float("nan")), ValueError),
    (lambda: compute_optimal(0.0), ValueError),
    (lambda: compute_optimal(1e20, tokens_per_param=0), ValueError),
    (lambda: compute_optimal(None), TypeError),
    (lambda: LossLaw(1.0, -1.0, 1.0, 0.3, 0.3), ValueError),
    (lambda: LossLaw(1.0, 1.0, 1.0, 0.0, 0.3), ValueError),
    (lambda: CHINCHILLA.predict(0, 1e9), ValueError),
    (lambda: CHINCHILLA.predict("a lot", 1e9), TypeError),
    (lambda: CHINCHILLA.optimum(-1e20), ValueError),
    (lambda: fit_loss_law([1e5] * 4, [1e6] * 4, [3.0] * 4), ValueError),  # 5 parameters need 5 points
    (lambda: fit_loss_law([1e5] * 5, [1e6] * 6, [3.0] * 5), ValueError),
    (lambda: fit_loss_law([1e5] * 5, [1e6] * 5, [3.0, 3.0, 3.0, 3.0, 0.0]), ValueError),
    (lambda: fit_loss_law([1e5] * 5, [1e6] * 5, [3.0, 3.0, 3.0, 3.0, float("inf")]), ValueError),
    (lambda: fit_loss_law([1e5] * 5, [1e6] * 5, ["3"] * 5), TypeError),
    (lambda: fit_isoflop([1e4, 1e5], [3.0, 2.0]), ValueError),
    (lambda: fit_isoflop([1e4, 1e5, 1e6], [2.0, 3.0, 2.0]), ValueError),  # curves down: no minimum
    (lambda: run_point(0, 16, 2, 1e9), ValueError),
    (lambda: run_point(1, 16, 2, 0.0), ValueError),
])
def test_bad_inputs_raise(call, error):
    with pytest.raises(error):
        call()


# ----------------------------------------------------------------------------- the law and its optimum


def test_predict_matches_the_formula_and_broadcasts():
    expected = 1.69 + 406.4 / 70e9 ** 0.34 + 410.7 / 1.4e12 ** 0.28
    assert CHINCHILLA.predict(70e9, 1.4e12) == pytest.approx(expected, rel=1e-12)
    assert isinstance(CHINCHILLA.predict(70e9, 1.4e12), float)
    grid = CHINCHILLA.predict(torch.tensor([[1e9], [1e10]]), torch.tensor([1e10, 1e11, 1e12]))
    assert grid.shape == (2, 3)
    assert (grid.diff(dim=0) < 0).all() and (grid.diff(dim=1) < 0).all()  # more of either lowers the loss


@pytest.mark.parametrize("law", [CHINCHILLA, LossLaw(2.5, 60.0, 900.0, 0.45, 0.5), LossLaw(0.0, 10.0, 10.0, 1.0, 0.2)])
@pytest.mark.parametrize("flops", [1e12, 5.76e23])
def test_optimum_is_the_least_loss_on_the_iso_flop_line(law, flops):
    n, d = law.optimum(flops)
    assert 6 * n * d == pytest.approx(flops, rel=1e-12)
    # brute force: the predicted loss on a fine grid of sizes along 6 N D = flops
    sizes = torch.logspace(math.log10(n) - 3, math.log10(n) + 3, 60_001, dtype=torch.float64)
    losses = law.predict(sizes, flops / (6 * sizes))
    assert sizes[losses.argmin()].item() == pytest.approx(n, rel=1e-3)


def test_chinchilla_law_beats_gopher_at_gophers_budget():
    # Hoffmann et al.: Chinchilla (70B, 1.4T tokens) outperforms Gopher (280B, 300B tokens) at the same compute
    assert CHINCHILLA.predict(70e9, 1.4e12) < CHINCHILLA.predict(280e9, 300e9)


# ----------------------------------------------------------------------------- fitting


def _grid(law: LossLaw, sizes, budgets) -> tuple[list[float], list[float], list[float]]:
    """An iso-FLOP design: every size at every budget, losses from ``law``."""
    pts = [(n, c / (6 * n)) for c in budgets for n in sizes]
    return [p[0] for p in pts], [p[1] for p in pts], [law.predict(*p) for p in pts]


@pytest.mark.parametrize("law, sizes, budgets", [
    (CHINCHILLA, [1e7, 3e7, 1e8, 3e8, 1e9, 3e9], [1e18, 1e19, 1e20, 1e21]),
    (LossLaw(3.0, 50.0, 80.0, 0.4, 0.35), [2e4, 4e4, 8e4, 1.6e5, 3.2e5], [5e10, 1e11, 2e11, 4e11]),
])
def test_fit_recovers_a_known_law(law, sizes, budgets):
    fit = fit_loss_law(*_grid(law, sizes, budgets))
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(law, name), rel=1e-3), name
    assert fit.optimum(budgets[-1])[0] == pytest.approx(law.optimum(budgets[-1])[0], rel=1e-3)


def test_fit_shrugs_off_an_outlier():
    """The Huber loss with a small threshold acts like absolute error: one bad run barely moves the fit,
    where least squares would bend to it."""
    law = LossLaw(3.0, 50.0, 80.0, 0.4, 0.35)
    n, d, losses = _grid(law, [2e4, 4e4, 8e4, 1.6e5, 3.2e5], [5e10, 1e11, 2e11, 4e11])
    losses[7] *= 1.3
    fit = fit_loss_law(n, d, losses)
    assert fit.alpha == pytest.approx(law.alpha, abs=0.02) and fit.beta == pytest.approx(law.beta, abs=0.02)
    assert fit.E == pytest.approx(law.E, abs=0.05)


def test_fit_isoflop_finds_the_vertex():
    sizes = [1e4, 3e4, 1e5, 3e5, 1e6]
    n, loss = fit_isoflop(sizes, [(math.log(s) - math.log(5e4)) ** 2 + 3.0 for s in sizes])
    assert n == pytest.approx(5e4, rel=1e-9) and loss == pytest.approx(3.0, abs=1e-9)
    # on a law's iso-FLOP profile sampled closely around its optimum, the parabola's vertex is near it
    law, flops = LossLaw(2.5, 60.0, 900.0, 0.45, 0.5), 1e12
    best = law.optimum(flops)[0]
    sizes = [best * f for f in (0.5, 0.7, 1.0, 1.4, 2.0)]
    n, _ = fit_isoflop(sizes, [law.predict(s, flops / (6 * s)) for s in sizes])
    assert n == pytest.approx(best, rel=0.05)


# ----------------------------------------------------------------------------- the shipped sweep


@pytest.fixture(scope="module")
def table():
    return load_sweep()


@pytest.fixture(scope="module")
def data():
    return sweep_data()


def test_shipped_table_is_consistent_with_its_metadata(table, data):
    s: SweepSettings = table["sweep_settings"]
    assert table["command"] == SWEEP_COMMAND
    rows = table["rows"]
    assert sorted((r["n_layer"], r["n_embd"], r["n_head"], r["budget"]) for r in rows) == sorted(
        (*size, c) for size, c in itertools.product(s.sizes, s.budgets))
    assert table["data"]["train_tokens"] == len(data["train"])
    assert table["data"]["validation_tokens"] == len(data["validation"])
    assert table["data"]["vocab_size"] == data["vocab_size"]
    per_step = s.block_size * s.batch_size
    for r in rows:
        config = TransformerConfig(vocab_size=data["vocab_size"], block_size=s.block_size, n_layer=r["n_layer"],
                                   n_head=r["n_head"], n_embd=r["n_embd"], activation="gelu_tanh")
        assert r["n_params"] == DecoderOnlyLM(config).num_parameters()
        assert r["tokens"] == r["steps"] * per_step
        assert r["flops"] == pytest.approx(6 * r["n_params"] * r["tokens"], rel=1e-12)
        assert abs(r["flops"] - r["budget"]) <= 6 * r["n_params"] * per_step / 2 + 1  # whole steps
        assert r["epochs"] == pytest.approx(r["tokens"] / len(data["train"]), abs=1e-3)
        assert 0 < r["val_loss"] < math.log(data["vocab_size"])  # better than a uniform guess
    assert table["sweep_seconds"] >= sum(r["seconds"] for r in rows)
    json.dumps(table["settings"])  # the metadata stays plain JSON


def test_loss_falls_with_compute_for_every_size(table):
    """What makes a sweep believable: for each size, a larger budget (more tokens) gives a lower loss."""
    for size in table["sweep_settings"].sizes:
        runs = sorted((r["budget"], r["val_loss"]) for r in table["rows"]
                      if (r["n_layer"], r["n_embd"], r["n_head"]) == tuple(size))
        assert all(a[1] > b[1] for a, b in zip(runs, runs[1:])), (size, runs)


#: How far a re-run may land from the shipped loss, in nats (the chapter states the same).
TOLERANCE = 0.02


def test_one_point_of_the_sweep_is_remade(table, data):
    row = min(table["rows"], key=lambda r: r["steps"])  # the cheapest run
    again = run_point(row["n_layer"], row["n_embd"], row["n_head"], row["budget"], table["sweep_settings"], data)
    assert again["n_params"] == row["n_params"] and again["tokens"] == row["tokens"]
    assert again["val_loss"] == pytest.approx(row["val_loss"], abs=TOLERANCE)


def test_sweep_writes_a_table_that_loads_back(tmp_path, data):
    settings = SweepSettings(sizes=((1, 8, 1),), budgets=(2e8, 1e8), batch_size=2, block_size=16)
    out = tmp_path / "sweep.json"
    table = sweep(settings, out=out, progress=False)
    back = load_sweep(out)
    assert back["sweep_settings"] == settings
    assert [r["budget"] for r in back["rows"]] == [1e8, 2e8]  # cheapest budget first
    assert back["rows"] == table["rows"]


def test_command_refuses_a_point_not_in_the_table(capsys):
    from course_utils.scaling import main

    with pytest.raises(SystemExit) as exit_info:
        main(["point", "1", "8", "1", "123.0"])
    assert exit_info.value.code == 2 and "no point" in capsys.readouterr().err
