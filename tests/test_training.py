"""Tests for course_utils.training: the one training loop.

References: hand-worked learning rates and PyTorch's own schedulers
(``LinearLR`` then ``CosineAnnealingLR``), gradients from plain autograd,
``torch.nn.utils.clip_grad_norm_``, ``torch.optim.AdamW``, and
``torch.nn.functional.cross_entropy``. Everything runs on the CPU with tiny models.
"""

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.training import (
    History,
    TrainConfig,
    configure_optimizer,
    evaluate,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    train,
)
from course_utils.transformer import DecoderOnlyLM, EncoderDecoderLM, EncoderOnlyLM, TransformerConfig

V, T = 24, 16
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two threads on a busy 2-core machine are much slower than one for these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(cls=DecoderOnlyLM, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=32)
    cfg.update(overrides)
    return cls(TransformerConfig(**cfg))


def config(**overrides) -> TrainConfig:
    base = dict(max_steps=4, lr=1e-2, warmup_steps=0, log_every=1, eval_every=2, eval_batches=2,
                device="cpu", progress=False, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def lm_batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    x = torch.randint(0, V, (rows, T), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": x, "labels": x.clone()}


def mlm_batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(1, V - 1, (rows, T), generator=g)
    masked = torch.rand(rows, T, generator=g) < 0.3
    masked[:, 0] = True  # at least one prediction per row
    return {"input_ids": original.masked_fill(masked, V - 1),  # V - 1 plays [MASK]
            "labels": original.masked_fill(~masked, -100)}


def seq2seq_batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    x = torch.randint(1, V, (rows, 8), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": x, "labels": x.flip(1)}  # learn to reverse


DATA = torch.randint(0, V, (6, T), generator=torch.Generator().manual_seed(7))


def get_batch(split: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Four random rows of DATA, drawn with the generator train hands over."""
    rows = torch.randint(0, len(DATA), (4,), generator=generator)
    return {"input_ids": DATA[rows], "labels": DATA[rows]}


def get_batch_global_rng(split: str) -> dict[str, torch.Tensor]:
    """The same, drawn from torch's global generator (no generator parameter)."""
    rows = torch.randint(0, len(DATA), (4,))
    return {"input_ids": DATA[rows], "labels": DATA[rows]}


def optimizer_state(checkpoint: Path, like: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A fresh model and optimizer with the weights and optimizer state of ``checkpoint``."""
    model = copy.deepcopy(like)
    opt = configure_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    load_checkpoint(checkpoint, model, opt)
    return model, opt


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("cls, make", [(DecoderOnlyLM, lm_batch), (EncoderOnlyLM, mlm_batch),
                                       (EncoderDecoderLM, seq2seq_batch)])
def test_loss_decreases_on_memorisation(cls, make):
    model = tiny(cls)
    batches = [make(4, seed) for seed in range(2)]
    start, start_ppl = evaluate(model, batches)
    # at initialisation (weights N(0, 0.02)) the model predicts nearly uniformly: loss ~ ln V
    assert start == pytest.approx(math.log(V), abs=0.3)
    assert start_ppl == pytest.approx(math.exp(start), rel=1e-9)
    history = train(model, batches, config(max_steps=40, lr=1e-2, warmup_steps=4, eval_every=20,
                                           weight_decay=0.0), val_batches=batches)
    assert history.step == list(range(1, 41))
    assert history.val_step == [20, 40]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_loss[-1] < 0.5 * start
    assert history.val_ppl[-1] == pytest.approx(math.exp(history.val_loss[-1]), rel=1e-9)
    assert history.tokens[-1] == 40 * batches[0]["input_ids"].numel()
    assert model.training  # back in the mode it came in


def test_evaluate_matches_cross_entropy_by_hand():
    model = tiny()
    batches = [lm_batch(3, 1), lm_batch(5, 2)]
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(b["input_ids"])[0][:, :-1].reshape(-1, V), b["labels"][:, 1:].reshape(-1))
                  for b in batches]
    model.train()
    loss, ppl = evaluate(model, batches)
    expected = (losses[0] + losses[1]).item() / 2  # the mean over batches
    assert loss == pytest.approx(expected, rel=1e-6)
    assert ppl == pytest.approx(math.exp(expected), rel=1e-6)
    assert model.training
    # a callable is asked for max_batches batches, the same ones every call
    assert evaluate(model, get_batch, max_batches=3) == evaluate(model, get_batch, max_batches=3)
    with pytest.raises(ValueError, match="max_batches"):
        evaluate(model, get_batch)


def test_hugging_face_style_output_with_loss_attribute():
    class Wrapped(nn.Module):  # forward returns an object with .loss, as transformers models do
        def __init__(self):
            super().__init__()
            self.inner = tiny()

        def forward(self, **batch):
            logits, loss = self.inner(**batch)
            return type("Output", (), {"logits": logits, "loss": loss})()

    model = Wrapped()
    history = train(model, [lm_batch(4, 0)], config(max_steps=10))
    assert history.train_loss[-1] < history.train_loss[0]


# ----------------------------------------------------------------------------- optimizer and schedule


def test_weight_decay_on_matrices_only():
    model = tiny(n_layer=2)
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    names = {id(p): n for n, p in model.named_parameters()}  # the tied lm_head.weight is listed once, as wte
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    matrices = ("wte.weight", "wpe.weight", "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                "mlp.c_proj.weight")
    expected_decay = {n for n in names.values() if n.endswith(matrices)}
    assert len(expected_decay) == 2 + 2 * 4
    assert {names[id(p)] for p in decay["params"]} == expected_decay
    # everything else is a bias or a LayerNorm gain
    assert all(n.endswith("bias") or ".ln_" in n or n.startswith("ln_") for p in no_decay["params"]
               for n in [names[id(p)]])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_parameters()
    assert not opt.param_groups[0]["fused"]  # the fused kernel is for CUDA
    # a hand-sized example: Linear(4, 3) -> the (3, 4) weight decays, the bias does not
    opt = configure_optimizer(nn.Linear(4, 3), lr=1e-3, weight_decay=0.5)
    assert [[tuple(p.shape) for p in g["params"]] for g in opt.param_groups] == [[(3, 4)], [(3,)]]


def test_lr_schedule_hand_values():
    args = dict(max_lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, **args) == pytest.approx(1e-4)  # 1e-3 * 1 / 10
    assert lr_at(4, **args) == pytest.approx(5e-4)
    assert lr_at(9, **args) == pytest.approx(1e-3)
    assert lr_at(10, **args) == pytest.approx(1e-3)  # the cosine starts at the top
    assert lr_at(35, **args) == pytest.approx(1e-4 + 9e-4 * (1 + math.sqrt(0.5)) / 2)  # a quarter of the way
    assert lr_at(60, **args) == pytest.approx(5.5e-4)  # half way
    assert lr_at(110, **args) == pytest.approx(1e-4)
    assert lr_at(500, **args) == pytest.approx(1e-4)
    # no warmup: the first update already uses max_lr
    assert lr_at(0, 1e-3, 0.0, 0, 4) == 1e-3


def test_lr_schedule_matches_torch_schedulers():
    max_lr, min_lr, warmup, steps = 2e-3, 2e-4, 5, 40
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=min_lr),
    ], milestones=[warmup])
    for step in range(steps):
        expected = opt.param_groups[0]["lr"]
        assert lr_at(step, max_lr, min_lr, warmup, steps) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        opt.step()
        scheduler.step()


def test_train_records_the_scheduled_lr():
    history = train(tiny(), [lm_batch(2, 0)], config(max_steps=4, warmup_steps=2, lr=1e-3, min_lr_ratio=0.1))
    # warmup: 1e-3 * 1/2, 1e-3; cosine over steps 2..4: 1e-3 at 2, half way at 3
    assert history.lr == pytest.approx([5e-4, 1e-3, 1e-3, 1e-4 + 9e-4 / 2])


# ----------------------------------------------------------------------------- gradients


def reference_gradients(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    model(**batch)[1].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def first_moment_after_one_step(model, batches, cfg, tmp_path) -> tuple[dict, dict]:
    """Train one step with beta1 = 0, so AdamW's exp_avg is exactly the gradient it used."""
    trained = copy.deepcopy(model)
    train(trained, batches, cfg)
    restored, opt = optimizer_state(tmp_path / "step_000001", model, cfg)
    exp_avg = {n: opt.state[p]["exp_avg"] for n, p in restored.named_parameters()}
    return exp_avg, dict(trained.named_parameters())


def test_gradient_accumulation_equals_full_batch(tmp_path):
    model = tiny()
    full = lm_batch(8, 3)
    halves = [{k: v[:4] for k, v in full.items()}, {k: v[4:] for k, v in full.items()}]  # equal token counts
    expected = reference_gradients(model, full)
    common = dict(max_steps=1, betas=(0.0, 0.999), grad_clip=0.0, weight_decay=0.1)
    g_acc, w_acc = first_moment_after_one_step(
        model, halves, config(grad_accum_steps=2, checkpoint_dir=str(tmp_path / "acc"), **common), tmp_path / "acc")
    g_full, w_full = first_moment_after_one_step(
        model, [full], config(grad_accum_steps=1, checkpoint_dir=str(tmp_path / "full"), **common), tmp_path / "full")
    for name, g in expected.items():
        torch.testing.assert_close(g_acc[name], g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_full[name], g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w_acc[name], w_full[name], rtol=0, atol=1e-6)
    # and the update is torch's AdamW step with those gradients, decay on matrices only
    manual = copy.deepcopy(model)
    groups = [{"params": [p for p in manual.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in manual.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.0, 0.999))
    for name, p in manual.named_parameters():
        p.grad = expected[name].clone()
    opt.step()
    for name, p in manual.named_parameters():
        torch.testing.assert_close(w_acc[name], p, rtol=0, atol=1e-6)


@pytest.mark.parametrize("factor", [0.25, 4.0])
def test_grad_clip_caps_the_global_norm(tmp_path, factor):
    model = tiny()
    batch = lm_batch(4, 5)
    grads = reference_gradients(model, batch)
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))  # by hand, every parameter
    clip = factor * norm
    scale = min(1.0, clip / (norm + 1e-6))  # torch's rule
    expected = {n: g * scale for n, g in grads.items()}
    # the same as torch.nn.utils.clip_grad_norm_ on a copy
    copied = copy.deepcopy(model)
    copied(**batch)[1].backward()
    total = torch.nn.utils.clip_grad_norm_(copied.parameters(), clip)
    assert float(total) == pytest.approx(norm, rel=1e-5)
    for n, p in copied.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-7)
    cfg = config(max_steps=1, betas=(0.0, 0.999), grad_clip=clip, checkpoint_dir=str(tmp_path))
    used, _ = first_moment_after_one_step(model, [batch], cfg, tmp_path)
    for n, g in expected.items():
        torch.testing.assert_close(used[n], g, rtol=1e-5, atol=1e-7)
    used_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in used.values()))
    assert used_norm == pytest.approx(min(clip, norm), rel=1e-5)


# ----------------------------------------------------------------------------- checkpoints and resuming


@pytest.mark.parametrize("cls", [DecoderOnlyLM, EncoderOnlyLM, EncoderDecoderLM])
def test_checkpoint_round_trip(tmp_path, cls):
    from safetensors import safe_open

    model = tiny(cls, seed=1)
    batch = {DecoderOnlyLM: lm_batch, EncoderOnlyLM: mlm_batch, EncoderDecoderLM: seq2seq_batch}[cls](4, 0)
    cfg = config(max_steps=2)
    opt = configure_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    model(**batch)[1].backward()
    opt.step()
    history = History(step=[1], train_loss=[3.0], lr=[1e-2], tokens=[64], time=[0.5])
    save_checkpoint(tmp_path, model, opt, step=1, config=cfg, history=history)

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    assert len({"wte.weight", "lm_head.weight"} & stored) == 1  # the tied matrix is stored once

    fresh = tiny(cls, seed=2)
    fresh_opt = configure_optimizer(fresh, cfg.lr, cfg.weight_decay, cfg.betas)
    info = load_checkpoint(tmp_path, fresh, fresh_opt)
    assert fresh.lm_head.weight is fresh.wte.weight  # still tied
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for i, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(loaded["state"][i][key], value), (i, key)
    assert info["step"] == 1
    assert info["model_class"] == cls.__name__
    assert info["model_config"] == model.config.to_dict()
    assert TrainConfig(**info["train_config"]) == cfg
    assert History.from_dict(info["history"]) == history
    (tmp_path / "optimizer.safetensors").unlink()
    with pytest.raises(ValueError, match="optimizer.safetensors"):
        load_checkpoint(tmp_path, fresh, fresh_opt)


@pytest.mark.parametrize("source", ["generator", "global_rng", "list"])
def test_resume_equals_uninterrupted_run(tmp_path, source):
    batches = {"generator": get_batch, "global_rng": get_batch_global_rng,
               "list": [lm_batch(4, seed) for seed in range(5)]}[source]  # 5 batches: the list wraps around
    common = dict(max_steps=6, grad_accum_steps=2, warmup_steps=2, eval_every=2, eval_batches=2)
    whole = tiny(dropout=0.1)  # dropout draws random numbers too
    full = train(whole, batches, config(checkpoint_dir=str(tmp_path), checkpoint_every=3, **common),
                 val_batches=batches)

    resumed = tiny(dropout=0.1, seed=99)  # different starting weights, all overwritten by the checkpoint
    second = train(resumed, batches, config(**common), val_batches=batches, resume_from=tmp_path / "step_000003")

    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    for key in ("step", "train_loss", "lr", "tokens", "val_step", "val_loss"):
        assert getattr(second, key) == getattr(full, key), key


def test_same_seed_same_run_other_seed_other_run():
    models = [tiny(dropout=0.1) for _ in range(3)]  # the same initial weights
    runs = [train(m, get_batch, config(max_steps=5, seed=seed)) for m, seed in zip(models, (3, 3, 4))]
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].train_loss != runs[2].train_loss  # other batches, other dropout masks
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_evaluating_does_not_change_the_training_run():
    """Validation draws its own batches: the training batches and dropout masks stay as they were."""
    plain, evaluated = tiny(dropout=0.1), tiny(dropout=0.1)
    a = train(plain, get_batch_global_rng, config(max_steps=6))
    b = train(evaluated, get_batch_global_rng, config(max_steps=6, eval_every=2), val_batches=get_batch_global_rng)
    assert b.val_step == [2, 4, 6]
    assert a.train_loss == b.train_loss
    for p, q in zip(plain.parameters(), evaluated.parameters()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field, value", [
    ("max_steps", 0), ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")), ("min_lr_ratio", 1.5),
    ("warmup_steps", -1), ("warmup_steps", 5000), ("weight_decay", -0.1), ("betas", (0.9,)), ("betas", (0.9, 1.0)),
    ("grad_clip", -1.0), ("grad_accum_steps", 0), ("eval_every", 0), ("eval_batches", 0), ("log_every", 0),
    ("checkpoint_every", -1), ("max_seconds", 0), ("max_seconds", float("inf")),
])
def test_bad_config_value_raises_value_error(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]) as err:
        TrainConfig(**{field: value})
    assert "got" in str(err.value)  # the message says what was given


@pytest.mark.parametrize("field, value", [
    ("max_steps", 2.5), ("max_steps", True), ("seed", 1.5), ("use_amp", "yes"), ("progress", None), ("device", 3),
    ("betas", 0.9), ("lr", "1e-3"), ("max_seconds", "60"), ("checkpoint_dir", 5), ("desc", None),
])
def test_bad_config_type_raises_type_error(field, value):
    with pytest.raises(TypeError, match=field.split("_")[0]) as err:
        TrainConfig(**{field: value})
    assert "got" in str(err.value)


class FakeClock:
    """Stands in for the ``time`` module in course_utils.training: each reading is one second later."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_time_limit_ends_the_run_and_the_last_step_is_recorded_evaluated_and_saved(tmp_path, monkeypatch):
    import course_utils.training as training

    monkeypatch.setattr(training, "time", FakeClock())  # t0, then one reading per step: step n ends at n s
    model = tiny()
    history = train(model, [lm_batch(2, 0)], config(max_steps=100, max_seconds=3.5, log_every=2, eval_every=2,
                                                       checkpoint_dir=str(tmp_path)), val_batches=[lm_batch(2, 1)])
    assert history.step == [2, 4] and history.time == [2.0, 4.0]  # step 4 is the first at >= 3.5 s
    assert history.val_step == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000004"]
    # the schedule is still that of max_steps=100: the time limit only stops the run
    assert history.lr[-1] == lr_at(3, 1e-2, 1e-3, 0, 100)
    assert model.training


def test_time_limit_in_real_seconds():
    history = train(tiny(), [lm_batch(2, 0)], config(max_steps=10**9, max_seconds=0.3, log_every=1000))
    assert history.time[-1] >= 0.3 and len(history.step) == 1 and history.step[0] < 10**9


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="min_lr"):
        lr_at(0, max_lr=1e-3, min_lr=2e-3, warmup_steps=0, max_steps=10)
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, 1e-3, 0.0, 0, 10)
    with pytest.raises(ValueError, match="weight_decay"):
        configure_optimizer(tiny(), lr=1e-3, weight_decay=-1.0)
    with pytest.raises(TypeError, match="config"):
        train(tiny(), [lm_batch(2, 0)], {"max_steps": 2})
    with pytest.raises(ValueError, match="labels"):
        train(tiny(), [{"input_ids": DATA[:2]}], config(max_steps=1))
    with pytest.raises(TypeError, match="dicts"):
        train(tiny(), [DATA[:2]], config(max_steps=1))
    with pytest.raises(TypeError, match="train_batches"):
        train(tiny(), 42, config(max_steps=1))
    one_shot = iter([lm_batch(2, 0)])  # an iterator cannot be read twice
    with pytest.raises(ValueError, match="ran out after 1 batches"):
        train(tiny(), one_shot, config(max_steps=2))
    with pytest.raises(ValueError, match="checkpoint directory"):
        load_checkpoint("/nonexistent/checkpoint", tiny())


def test_history_as_dict_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = train(tiny(), [lm_batch(4, 0)], config(max_steps=4), val_batches=[lm_batch(4, 1)])
    d = history.as_dict()
    assert {"step", "train_loss", "val_step", "val_loss"} <= set(d)
    assert d["step"] == [1, 2, 3, 4] and d["val_step"] == [2, 4]
    fig = history.plot()
    assert len(fig.axes[0].lines) == 2  # train and validation
    plt.close(fig)


# ----------------------------------------------------------------------------- distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # loopback only
        return s.getsockname()[1]


def test_ddp_two_processes_stay_in_sync(tmp_path):
    from safetensors.torch import load_file

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # its own process group, so a hang can be cleaned up
    try:
        output, _ = launcher.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers
        output, _ = launcher.communicate()
    assert launcher.returncode == 0, output[-3000:]

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert records[0]["drawn"] != records[1]["drawn"]  # each process draws its own batches
    assert [r["seen"] for r in records] == [[0, 2, 0], [1, 3, 1]]  # a list is dealt out round-robin, then reread
    weights = [load_file(str(tmp_path / f"weights_rank{r}.safetensors")) for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name  # in sync, though initialised differently
    losses = records[0]["train_loss"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    checkpoint = tmp_path / "ckpt" / "step_000012"
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "optimizer.safetensors",
                                                     "checkpoint.json", "rng_rank0.safetensors",
                                                     "rng_rank1.safetensors"}
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.equal(saved[k], weights[0][k]) for k in saved)
