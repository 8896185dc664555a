"""Training across devices: data parallelism, ZeRO and FSDP with PyTorch's own engine.

Chapter "Training across devices" runs everything here on CPU processes that
talk through ``torch.distributed``'s Gloo backend over the loopback interface
(127.0.0.1), so that a 2-core laptop shows what a cluster of GPUs does:

* :func:`run_on_ranks` starts ``N`` processes from a notebook (forked, so a
  function defined in a cell can run in them), joins them into one process
  group and returns what each one returned; :func:`torchrun` launches a
  module or script with PyTorch's ``torchrun`` the way a real job starts;
* :func:`shard` applies a strategy to a model: ``"ddp"``
  (``DistributedDataParallel``, Li et al. 2020), ``"zero1"`` (DDP plus
  ``ZeroRedundancyOptimizer``, stage 1 of Rajbhandari et al. 2020) or
  ``"fsdp"`` (FSDP2's ``fully_shard`` on every transformer block and on the
  whole model, which shards like ZeRO stage 3; Zhao et al. 2023), and :func:`make_optimizer` builds the
  matching AdamW;
* :func:`held_memory` adds up the bytes of weights, gradients and optimizer
  states a process really holds (only its shards), to compare with
  :func:`course_utils.memory.sharded_memory`;
* :class:`CollectiveCounter` counts the bytes of every collective a process
  issues (all-gather, reduce-scatter, broadcast through PyTorch's dispatcher;
  DDP's gradient all-reduce through a communication hook), to compare with
  :func:`course_utils.memory.communication_volume`.

``python -m course_utils.distributed measure OUT`` (under ``torchrun``) takes one
training step with each strategy and writes what each rank held and sent.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .checks import check_int, check_number, check_one_of
from .memory import MemoryBreakdown

__all__ = [
    "STRATEGIES",
    "run_on_ranks",
    "torchrun",
    "loopback_env",
    "shard",
    "fsdp_units",
    "make_optimizer",
    "held_memory",
    "CollectiveCounter",
    "zero1_groups",
    "measure_step",
    "read_measurement",
    "demo_batches",
    "demo_model",
    "train_job",
]

#: The strategies :func:`shard` applies (``course_utils.memory.SHARDINGS`` also
#: predicts ZeRO-2, which the course does not run; FSDP's ``reshard_after_forward=False``
#: comes close to it).
STRATEGIES = ("ddp", "zero1", "fsdp")


# ----------------------------------------------------------------------------- processes


def loopback_env() -> dict[str, str]:
    """Environment that keeps a process group on this machine: the rendezvous
    on 127.0.0.1 and Gloo's sockets on the loopback interface (``lo``, ``lo0`` on
    macOS), one thread per process (the processes share the cores)."""
    return {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo0" if sys.platform == "darwin" else "lo",
            "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn: Callable[..., Any], rank: int, world_size: int, port: int, args: tuple, queue: Any,
               timeout: float) -> None:
    import datetime
    import warnings

    os.environ.update(loopback_env(), MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # as DataLoader workers do after a fork: the cores are shared
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # FSDP's hooks on integer inputs
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        try:
            # pickled here, by value: a tensor put on the queue as it is would travel as a handle to
            # shared memory that dies with this process
            queue.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - the parent re-raises it with this rank's traceback
        queue.put((rank, False, traceback.format_exc()))


def run_on_ranks(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 300.0) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes that
    form one Gloo process group on 127.0.0.1; return the results in rank order.

    The processes are forked from this one, so ``fn`` may be defined in a
    notebook cell; each uses one thread. The results travel back pickled (keep
    them small: numbers, lists, CPU tensors). If a process fails, the others are
    stopped and a ``RuntimeError`` carries its traceback; ``timeout`` seconds is
    the limit for the whole run. Forking is POSIX only: on Windows use
    :func:`torchrun` with a script.
    """
    import multiprocessing as mp
    import queue as queue_module

    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    world_size = check_int("world_size", world_size, minimum=1)
    timeout = check_number("timeout", timeout, low=0, low_open=True)
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("run_on_ranks forks processes, which this platform cannot do; start a script with "
                           "course_utils.distributed.torchrun instead")
    ctx = mp.get_context("fork")
    results: Any = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world_size, port, args, results, timeout), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    failed: dict[int, str] = {}
    try:
        while len(out) + len(failed) < world_size:
            try:  # after a failure the others usually fail soon (their peer is gone): wait a little for them
                rank, ok, value = results.get(timeout=5.0 if failed else timeout)
            except queue_module.Empty:
                if failed:
                    break
                raise RuntimeError(f"run_on_ranks: no result from ranks {sorted(set(range(world_size)) - set(out))} "
                                   f"within {timeout:g} s") from None
            if ok:
                out[rank] = pickle.loads(value)
            else:
                failed[rank] = value
        if failed:
            # the cause first: a rank whose peer vanished fails with a connection error
            order = sorted(failed, key=lambda r: ("Connection closed by peer" in failed[r]
                                                  or "Connection reset" in failed[r], r))
            raise RuntimeError("\n".join(f"rank {r} of {world_size} failed:\n{failed[r]}" for r in order))
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [out[r] for r in range(world_size)]


def torchrun(argv: Sequence[str], nproc: int, *, timeout: float = 600.0) -> str:
    """Launch ``nproc`` processes with PyTorch's launcher, as a real job starts:
    ``python -m torch.distributed.run --nproc-per-node nproc ARGV`` on 127.0.0.1
    (a free port), one thread each. ``argv`` is a script and its arguments, or
    ``["-m", "module", ...]``. Returns the processes' standard output; raises
    ``RuntimeError`` with their error output if any of them fails."""
    nproc = check_int("nproc", nproc, minimum=1)
    if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
        raise TypeError("argv must be a list of strings, e.g. ['-m', 'course_utils.distributed', 'measure', 'out']")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *argv]
    env = {**os.environ, **loopback_env(), "PYTHONWARNINGS": "ignore::UserWarning"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {done.returncode}): {' '.join(argv)}\n{done.stderr[-4000:]}")
    return done.stdout


# ----------------------------------------------------------------------------- strategies


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards as units of their own: every transformer
    block of the course's models (``course_utils.transformer.Block``); the
    rest (embeddings, final norm, head) stays in the root unit."""
    from .transformer import Block

    return [m for m in model.modules() if isinstance(m, Block)]


def shard(model: nn.Module, strategy: str) -> nn.Module:
    """Prepare ``model`` (on this process's device) for ``strategy`` inside a
    started process group and return the module to call.

    ``"ddp"`` and ``"zero1"`` return ``DistributedDataParallel(model)`` with
    ``gradient_as_bucket_view=True`` (the gradients live in DDP's
    communication buckets, not in a second copy); for ``"zero1"`` the sharding
    is in the optimizer (:func:`make_optimizer`). ``"fsdp"`` applies
    ``fully_shard`` to each of :func:`fsdp_units` and then to ``model``, in
    place: ``model`` itself is returned, its parameters now ``DTensor`` shards.
    """
    check_one_of("strategy", strategy, STRATEGIES)
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("shard needs a started process group: call it inside run_on_ranks or under torchrun")
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in fsdp_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               gradient_as_bucket_view=True)


def make_optimizer(model: nn.Module, strategy: str, lr: float = 1e-3, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.Optimizer:
    """The course's AdamW (:func:`course_utils.training.configure_optimizer`:
    decay on matrices only) for a model prepared by :func:`shard`; for
    ``"zero1"`` wrapped in ``ZeroRedundancyOptimizer``, which keeps on each
    process the states of its share of the tensors and broadcasts the weights it
    updated. Give the unwrapped model (for DDP, ``net.module``)."""
    from .training import configure_optimizer

    check_one_of("strategy", strategy, STRATEGIES)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError("give make_optimizer the model inside DistributedDataParallel (net.module)")
    adamw = configure_optimizer(model, lr, weight_decay, betas)
    if strategy != "zero1":
        return adamw
    from torch.distributed.optim import ZeroRedundancyOptimizer

    groups = [{k: v for k, v in g.items() if k == "params" or k == "weight_decay"} for g in adamw.param_groups]
    return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=lr, betas=betas)


def zero1_groups(optimizer: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """The parameter groups a ``ZeroRedundancyOptimizer`` partitions (as
    :func:`course_utils.memory.sharded_memory` takes them)."""
    return [list(g["params"]) for g in optimizer.param_groups]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def held_memory(model: nn.Module, optimizer: torch.optim.Optimizer) -> MemoryBreakdown:
    """Bytes of weights, gradients and optimizer states this process holds,
    counted from the tensors (a ``DTensor`` counts its local shard; a storage
    shared by several tensors counts once). Call it after ``optimizer.step()``
    and before ``zero_grad``. Activations are ``None`` (not measured)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    params = [p for p in model.parameters() if p.requires_grad]
    inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer keeps its local optimizer here

    def total(tensors: Any) -> int:
        seen, n = set(), 0
        for t in tensors:
            if isinstance(t, torch.Tensor):
                t = _local(t)
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
                if key not in seen:
                    seen.add(key)
                    n += t.numel() * t.element_size()
        return n

    return MemoryBreakdown(
        weights=total(params),
        gradients=total(p.grad for p in params),
        optimizer_states=total(v for state in inner.state.values() for v in state.values()),
        activations=None,
        n_params=sum(_local(p).numel() for p in params),
        label=f"held by rank {dist.get_rank() if dist.is_initialized() else 0}",
    )


# ----------------------------------------------------------------------------- communication

# c10d operator -> (collective kind, which argument holds the full payload)
_C10D = {"allgather_base_": ("all_gather", 0), "_allgather_base_": ("all_gather", 0),
         "allgather_into_tensor_coalesced_": ("all_gather", 0),
         "reduce_scatter_base_": ("reduce_scatter", 1), "_reduce_scatter_base_": ("reduce_scatter", 1),
         "reduce_scatter_tensor_coalesced_": ("reduce_scatter", 1),
         "broadcast_": ("broadcast", 0), "allreduce_": ("all_reduce", 0)}


def _tensor_bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_tensor_bytes(t) for t in x)
    return 0


class CollectiveCounter(TorchDispatchMode):
    """Count the payload bytes of the collectives this process issues.

    Inside ``with CollectiveCounter() as counter:``, every ``c10d`` collective
    that passes through PyTorch's dispatcher (FSDP's all-gathers and
    reduce-scatters, ``ZeroRedundancyOptimizer``'s broadcasts, an explicit
    ``dist.all_reduce``) adds its payload (the full tensor gathered, reduced or
    sent) to ``counter.bytes[kind]`` and one to ``counter.calls[kind]``. DDP
    all-reduces its gradient buckets from C++, out of the dispatcher's sight:
    :meth:`watch_ddp` registers a communication hook that counts each bucket and
    then all-reduces it as DDP would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._in_hook = False  # DDP's hook counts its bucket itself; its all-reduce is not counted twice

    def _add(self, kind: str, n: int) -> None:
        self.bytes[kind] = self.bytes.get(kind, 0) + n
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - PyTorch's signature
        schema = func._schema.name
        if schema.startswith("c10d::") and not self._in_hook:
            op = schema.split("::", 1)[1]
            if op in _C10D:
                kind, index = _C10D[op]
                self._add(kind, _tensor_bytes(args[index]))
        return func(*args, **(kwargs or {}))

    def watch_ddp(self, net: nn.parallel.DistributedDataParallel) -> None:
        """Count DDP's gradient all-reduces (call once, before the first backward)."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        if not isinstance(net, nn.parallel.DistributedDataParallel):
            raise TypeError(f"net must be DistributedDataParallel, got {type(net).__name__}")

        def hook(state, bucket):  # no annotations: DDP checks them, and this module's are strings
            self._add("all_reduce", _tensor_bytes(bucket.buffer()))
            self._in_hook = True
            try:
                return allreduce_hook(state, bucket)
            finally:
                self._in_hook = False

        net.register_comm_hook(None, hook)


# ----------------------------------------------------------------------------- the measurement job


def _measure(out: Path, n_layer: int, n_embd: int, vocab_size: int, batch: int, seq: int) -> None:
    """One AdamW step with each strategy; each rank writes ``rank{r}.json``."""
    from .transformer import TransformerConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    config = TransformerConfig(vocab_size=vocab_size, block_size=seq, n_layer=n_layer, n_head=2, n_embd=n_embd,
                               dropout=0.0)
    record = {"world_size": dist.get_world_size(), "rank": dist.get_rank(), **measure_step(config, batch)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(record, indent=1))
    dist.destroy_process_group()


def measure_step(config: Any, batch_size: int = 2) -> dict[str, dict[str, Any]]:
    """In a started process group: for each of :data:`STRATEGIES`, build a
    ``DecoderOnlyLM(config)`` (seed 0), take one AdamW step on ``batch_size``
    random sequences of this rank, and return, per strategy, the bytes this
    rank ``held`` (:func:`held_memory`) and ``sent`` (:class:`CollectiveCounter`,
    with ``calls``) beside their ``predicted`` and ``predicted_sent`` values
    (:func:`course_utils.memory.sharded_memory` and ``communication_volume``
    on an unsharded twin of the model)."""
    from .memory import communication_volume, sharded_memory
    from .transformer import DecoderOnlyLM

    rank, world = dist.get_rank(), dist.get_world_size()
    record: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        torch.manual_seed(0)
        model = DecoderOnlyLM(config)
        plain = DecoderOnlyLM(config)  # an unsharded twin for the predictions
        predicted_comm = communication_volume(plain, strategy, world, fsdp_units=fsdp_units(plain))
        net = shard(model, strategy)
        optimizer = make_optimizer(model, strategy)
        counter = CollectiveCounter()
        if strategy != "fsdp":
            counter.watch_ddp(net)
        x = torch.randint(0, config.vocab_size, (batch_size, config.block_size),
                          generator=torch.Generator().manual_seed(rank))
        with counter:
            _, loss = net(input_ids=x, labels=x)
            loss.backward()
            optimizer.step()
        held = held_memory(model, optimizer)
        groups = zero1_groups(optimizer) if strategy == "zero1" else None
        if groups is not None:  # the same tensors, in the twin
            index = {id(p): i for i, p in enumerate(model.parameters())}
            twin = list(plain.parameters())
            groups = [[twin[index[id(p)]] for p in g] for g in groups]
        predicted = sharded_memory(plain, strategy, world, rank=rank, param_groups=groups)
        record[strategy] = {"held": held.as_dict(), "predicted": predicted.as_dict(),
                            "sent": counter.bytes, "calls": counter.calls, "predicted_sent": predicted_comm}
        dist.barrier()
    return record


def demo_batches(n: int, batch_size: int = 8, block_size: int = 64, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` fixed batches of byte-level windows of the course's prose corpus
    (``course_utils.data.prose_text``, bytes as tokens 0-255): every process and
    every run of the chapter's training jobs sees the same list.
    Each batch: ``{"input_ids": (B, T), "labels": (B, T)}``."""
    from .data.batching import random_batch

    generator = torch.Generator().manual_seed(seed)
    data = _demo_bytes()
    return [random_batch(data, block_size, batch_size, generator=generator) for _ in range(check_int("n", n, minimum=1))]


@functools.lru_cache(maxsize=1)
def _demo_bytes() -> torch.Tensor:
    """The first 400,000 bytes of the prose training text, as token ids (read once per process)."""
    from .data import prose_text

    return torch.tensor(list(prose_text("train").encode("utf-8")[:400_000]), dtype=torch.long)


def demo_model() -> nn.Module:
    """The chapter's small byte-level GPT (seeded, no dropout)."""
    from .transformer import DecoderOnlyLM, TransformerConfig

    torch.manual_seed(0)
    return DecoderOnlyLM(TransformerConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64,
                                           dropout=0.0))


def train_job(out: str | os.PathLike, steps: int, *, parallel: str = "ddp", grad_accum_steps: int = 1,
              resume_from: str | os.PathLike | None = None, checkpoint_every: int = 0) -> dict[str, Any]:
    """Train :func:`demo_model` on :func:`demo_batches` with
    :func:`course_utils.training.train` and return (and, on process 0, write to
    ``out/history.json``) its history. Under ``torchrun`` with N processes and
    ``grad_accum_steps=1`` each update uses N batches of the list, one per
    process; one process with ``grad_accum_steps=N`` uses the same N batches,
    so the two runs see the same data."""
    from .training import TrainConfig, train

    torch.set_num_threads(1)
    out = Path(out)
    config = TrainConfig(max_steps=steps, lr=3e-3, warmup_steps=min(10, steps), grad_accum_steps=grad_accum_steps,
                         eval_every=max(1, steps // 6), eval_batches=4, log_every=1, device="cpu", progress=False,
                         parallel=parallel, checkpoint_dir=str(out / "checkpoints"),
                         checkpoint_every=checkpoint_every)
    history = train(demo_model(), demo_batches(256), config, val_batches=demo_batches(4, seed=1),
                    resume_from=resume_from).as_dict()
    if not dist.is_initialized() or dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.json").write_text(json.dumps(history))
    return history


def read_measurement(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``rank{r}.json`` records a ``measure`` job wrote, in rank order."""
    files = sorted(Path(out).glob("rank*.json"), key=lambda f: int(f.stem[4:]))
    if not files:
        raise FileNotFoundError(f"no rank*.json in {out}: run `torchrun ... -m course_utils.distributed measure {out}`")
    return [json.loads(f.read_text()) for f in files]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_utils.distributed",
                                     description="Distributed jobs of the chapter 'Training across devices'; "
                                                 "run them under torchrun.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="one AdamW step per strategy; each rank writes OUT/rank{r}.json")
    m.add_argument("out", type=Path)
    m.add_argument("--n-layer", type=int, default=2)
    m.add_argument("--n-embd", type=int, default=64)
    m.add_argument("--vocab-size", type=int, default=257)
    m.add_argument("--batch", type=int, default=4)
    m.add_argument("--seq", type=int, default=32)
    t = sub.add_parser("train", help="train_job: the chapter's small GPT with course_utils.training.train")
    t.add_argument("out", type=Path)
    t.add_argument("--steps", type=int, default=60)
    t.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    t.add_argument("--grad-accum-steps", type=int, default=1)
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--resume-from", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "measure":
        _measure(args.out, args.n_layer, args.n_embd, args.vocab_size, args.batch, args.seq)
    else:
        train_job(args.out, args.steps, parallel=args.parallel, grad_accum_steps=args.grad_accum_steps,
                  resume_from=args.resume_from, checkpoint_every=args.checkpoint_every)


if __name__ == "__main__":
    main()
