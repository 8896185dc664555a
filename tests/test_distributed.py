"""Tests for training across devices: the memory and traffic predictions of
course_utils.memory against the ZeRO paper and against what PyTorch's own engines
(DDP, ZeroRedundancyOptimizer, FSDP2) hold and send in real Gloo process groups
on 127.0.0.1, and course_utils.training.train with FSDP and N -> M resumes."""

import json

import pytest
import torch
import torch.distributed as dist

from course_utils.distributed import (
    demo_batches,
    demo_model,
    measure_step,
    run_on_ranks,
    shard,
    torchrun,
    train_job,
)
from course_utils.memory import SHARDINGS, communication_volume, sharded_memory
from course_utils.training import TrainConfig
from course_utils.transformer import DecoderOnlyLM, TransformerConfig

GB = 1e9


def test_zero_paper_figure_1():
    """Rajbhandari et al. 2020, Figure 1: a 7.5 B-parameter model, mixed precision
    with Adam (K = 12), 64 devices: 120 GB per device with plain data parallelism,
    31.4 GB with P_os, 16.6 GB with P_os+g, 1.9 GB with P_os+g+p."""
    paper = {"ddp": 120.0, "zero1": 31.4, "zero2": 16.6, "zero3": 1.9}
    for sharding, gb in paper.items():
        got = sharded_memory(7.5e9, sharding, 64, precision="mixed-bf16").total / GB
        assert got == pytest.approx(gb, abs=0.05), sharding
    assert sharded_memory(7.5e9, "fsdp", 64, precision="mixed-bf16").total == \
        sharded_memory(7.5e9, "zero3", 64, precision="mixed-bf16").total
    # one device: every strategy is plain training (16 bytes per parameter, the paper's 2 + 2 + 12)
    for sharding in SHARDINGS:
        assert sharded_memory(1000, sharding, 1, precision="mixed-bf16").total == 16_000


def test_shards_round_up_and_components_move():
    one = sharded_memory(10, "zero3", 4)  # fp32 AdamW: 4 + 4 + 8 bytes, ceil(10 / 4) = 3 parameters per device
    assert (one.weights, one.gradients, one.optimizer_states) == (12, 12, 24)
    z2 = sharded_memory(10, "zero2", 4)
    assert (z2.weights, z2.gradients, z2.optimizer_states) == (40, 12, 24)
    z1 = sharded_memory(10, "zero1", 4)
    assert (z1.weights, z1.gradients, z1.optimizer_states) == (40, 40, 24)


def test_communication_volume_zero_paper_section_7():
    """Stages 1 and 2 move what DDP's all-reduce moves (a reduce-scatter and an
    all-gather of P each); stage 3 moves 1.5 times as much."""
    n = 1_000_000
    ddp = communication_volume(n, "ddp", 8)
    z2 = communication_volume(n, "zero2", 8)
    z3 = communication_volume(n, "zero3", 8)
    ring = 7 / 8
    sent = {"all_reduce": 2 * ring, "all_gather": ring, "reduce_scatter": ring, "broadcast": ring}
    per_device = {k: sum(v * sent[c] for c, v in d.items()) for k, d in (("ddp", ddp), ("zero2", z2), ("zero3", z3))}
    assert per_device["zero2"] == pytest.approx(per_device["ddp"])
    assert per_device["zero3"] == pytest.approx(1.5 * per_device["ddp"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="sharding"):
        sharded_memory(10, "zero4", 2)
    with pytest.raises(ValueError, match="rank"):
        sharded_memory(10, "zero3", 2, rank=2)
    with pytest.raises(ValueError, match="world_size"):
        sharded_memory(10, "ddp", 0)
    with pytest.raises(ValueError, match="fp32"):
        sharded_memory(torch.nn.Linear(2, 2), "ddp", 2, precision="mixed-bf16")
    with pytest.raises(ValueError, match="parallel"):
        TrainConfig(parallel="zero2")
    with pytest.raises(TypeError, match="callable"):
        run_on_ranks(3, 2)
    with pytest.raises(TypeError, match="argv"):
        torchrun("-m course_utils.distributed", 2)


def _fail_on_rank_1(rank: int, world: int) -> None:
    if rank == 1:
        raise ValueError("rank one says no")
    dist.barrier()


def test_a_failing_rank_is_reported_with_its_traceback():
    with pytest.raises(RuntimeError, match="(?s)rank 1 of 2 failed.*rank one says no"):
        run_on_ranks(_fail_on_rank_1, 2, timeout=60)


@pytest.mark.parametrize("world", [2, 3])
def test_held_bytes_equal_the_prediction_on_every_rank(world):
    # 3 ranks: 67 vocabulary rows and 30-wide matrices do not split evenly (FSDP's last shard is shorter)
    config = TransformerConfig(vocab_size=67, block_size=8, n_layer=2, n_head=2, n_embd=30, dropout=0.0)
    ranks = run_on_ranks(lambda rank, world_size: measure_step(config), world, timeout=240)
    for rank, record in enumerate(ranks):
        for strategy, r in record.items():
            for part in ("weights", "gradients", "optimizer_states"):
                assert r["held"][part] == r["predicted"][part], (world, rank, strategy, part)
            assert r["sent"] == r["predicted_sent"], (world, rank, strategy)
    # the shards add up to the whole: FSDP holds each weight once across ranks
    total = sum(p.numel() * 4 for p in DecoderOnlyLM(config).parameters())
    assert sum(r["fsdp"]["held"]["weights"] for r in ranks) == total
    assert sum(r["zero1"]["held"]["optimizer_states"] for r in ranks) == sum(
        r["ddp"]["held"]["optimizer_states"] for r in ranks) / world


def _ddp_gradients(rank: int, world: int, batch: dict) -> dict:
    torch.manual_seed(rank)  # different starting weights: DDP must copy rank 0's
    model = demo_model() if rank == 0 else DecoderOnlyLM(demo_model().config)
    net = shard(model, "ddp")
    rows = batch["input_ids"].chunk(world)[rank]
    net(input_ids=rows, labels=rows)[1].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_ddp_averages_to_the_full_batch_gradient():
    batch = demo_batches(1, batch_size=6)[0]
    model = demo_model()
    model(**batch)[1].backward()
    expected = {n: p.grad for n, p in model.named_parameters()}
    for world in (2, 3):
        for grads in run_on_ranks(_ddp_gradients, world, batch, timeout=120):
            for name, g in grads.items():
                torch.testing.assert_close(g, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def _train_on_ranks(rank: int, world: int, out: str, steps: int, resume: str | None, every: int) -> list:
    return train_job(out, steps, parallel="fsdp", resume_from=resume, checkpoint_every=every)["val_loss"]


def test_fsdp_training_matches_one_process_and_resumes_on_any_count(tmp_path):
    steps = 12
    single = train_job(tmp_path / "single", steps, grad_accum_steps=2, checkpoint_every=6)["val_loss"]
    sharded = run_on_ranks(_train_on_ranks, 2, str(tmp_path / "fsdp"), steps, None, 6, timeout=240)
    assert sharded[0] == sharded[1]  # every process evaluates the same (gathered) model
    assert sharded[0] == pytest.approx(single, rel=1e-5)
    assert single[-1] < single[0] - 0.5  # it learned something
    # saved by 2 processes, resumed by 1; saved by 1, resumed by 2: the same run either way
    one = train_job(tmp_path / "resume1", steps, grad_accum_steps=2,
                    resume_from=tmp_path / "fsdp" / "checkpoints" / "step_000006")["val_loss"]
    assert one == pytest.approx(single, rel=1e-5)
    two = run_on_ranks(_train_on_ranks, 2, str(tmp_path / "resume2"), steps,
                       str(tmp_path / "single" / "checkpoints" / "step_000006"), 0, timeout=240)
    assert two[0] == pytest.approx(single, rel=1e-5)
    saved = json.loads((tmp_path / "fsdp" / "checkpoints" / "step_000012" / "checkpoint.json").read_text())
    assert saved["model_class"] == "DecoderOnlyLM" and saved["train_config"]["parallel"] == "fsdp"


def test_the_measure_job_under_torchrun(tmp_path):
    from course_utils.distributed import read_measurement

    torchrun(["-m", "course_utils.distributed", "measure", str(tmp_path), "--n-layer", "1", "--n-embd", "16"], 2)
    records = read_measurement(tmp_path)
    assert [r["rank"] for r in records] == [0, 1] and all(r["world_size"] == 2 for r in records)
    for r in records:
        for strategy in ("ddp", "zero1", "fsdp"):
            assert r[strategy]["held"]["total"] == r[strategy]["predicted"]["total"]
            assert r[strategy]["sent"] == r[strategy]["predicted_sent"]
