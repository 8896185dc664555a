"""One process of the distributed test in ``test_training.py``; started by torchrun.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT_DIR``

Each process builds a tiny GPT from a *different* seed (DDP must copy process
0's weights to the others), trains it with ``course_utils.training.train`` and
writes to ``OUT_DIR``: its final weights (``weights_rank{r}.safetensors``), its
history and the batches it drew (``rank{r}.json``). A second, short run on a
list of batches records which of them each process was dealt.
"""

import json
import os
import sys
from pathlib import Path

import torch

from course_utils.training import TrainConfig, train
from course_utils.transformer import DecoderOnlyLM, TransformerConfig


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights on each process
    model = DecoderOnlyLM(TransformerConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16))
    data = torch.randint(0, 16, (6, 8), generator=torch.Generator().manual_seed(0))  # the same on every process
    drawn: list[list[int]] = []

    def get_batch(split: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        rows = torch.randint(0, len(data), (4,), generator=generator)
        drawn.append(rows.tolist())
        return {"input_ids": data[rows], "labels": data[rows]}

    config = TrainConfig(max_steps=12, lr=1e-2, warmup_steps=2, grad_accum_steps=2, log_every=1,
                         checkpoint_dir=str(out / "ckpt"), device="cpu", progress=False)
    history = train(model, get_batch, config)

    from safetensors.torch import save_model

    save_model(model, str(out / f"weights_rank{rank}.safetensors"))

    # a list of batches is dealt out round-robin: batch i holds only token i
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(int(kwargs["input_ids"][0, 0])),
                                    with_kwargs=True)
    listed = [{"input_ids": torch.full((2, 8), i), "labels": torch.full((2, 8), i)} for i in range(4)]
    train(model, listed, TrainConfig(max_steps=3, warmup_steps=0, device="cpu", progress=False))

    record = {"train_loss": history.train_loss, "drawn": drawn, "seen": seen,
              "world_size": int(os.environ["WORLD_SIZE"])}
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
