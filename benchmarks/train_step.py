"""Training-step throughput: DecoderOnlyLM vs transformers.GPT2LMHeadModel.

Same config and weights (copied with DecoderOnlyLM.from_hf), fp32 on the CPU,
one step = forward, backward and AdamW. Two sizes: about 1 M and 10 M parameters.

    python benchmarks/train_step.py
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging

from common import alternate, save, table
from course_utils.transformer import DecoderOnlyLM

SIZES = {
    "1M": dict(vocab_size=2048, n_positions=128, n_embd=128, n_layer=4, n_head=4, batch=16),
    "10M": dict(vocab_size=8192, n_positions=256, n_embd=256, n_layer=8, n_head=8, batch=8),
}


def step_fn(model, ids, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = model(ids, labels=ids)
        loss = out.loss if hf else out[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    logging.set_verbosity_error()
    rows = []
    for name, s in SIZES.items():
        torch.manual_seed(0)
        s = dict(s)
        B = s.pop("batch")
        hf = GPT2LMHeadModel(GPT2Config(**s, bos_token_id=0, eos_token_id=0)).train()
        ours = DecoderOnlyLM.from_hf(hf).train()
        T = s["n_positions"]
        ids = torch.randint(0, s["vocab_size"], (B, T))
        t = alternate({"ours": step_fn(ours, ids, False), "hf": step_fn(hf, ids, True)}, repeats=7, warmup=2)
        tok = B * T
        rows.append([name, f"{ours.num_parameters() / 1e6:.2f} M", f"{B}x{T}", tok / t["ours"], tok / t["hf"],
                     f"{t['hf'] / t['ours']:.2f}x"])
    save("train_step", "Training step (forward, backward, AdamW), fp32 CPU",
         table(["size", "parameters", "batch", "ours tokens/s", "HF GPT-2 tokens/s", "speed-up"], rows))


if __name__ == "__main__":
    main()
