"""How much of the CPU's matmul peak a training step reaches.

Measures the fp32 matmul peak of this machine (large square matmuls), then the
training throughput of DecoderOnlyLM, and reports achieved FLOP/s divided by
the peak. Training FLOPs per token: 6 N (forward and backward through N
non-embedding parameters plus the LM head) plus attention, 6 * n_layer * T * C
(Kaplan et al., 2020; Chowdhery et al., 2022, appendix B).

    python benchmarks/cpu_efficiency.py
"""

from __future__ import annotations

import time

import torch

from common import alternate, save, table
from course_utils.transformer import DecoderOnlyLM, TransformerConfig


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        t.append(time.perf_counter() - t0)
    return 2 * n**3 / min(t)


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for name, cfg, B in [
        ("1M", TransformerConfig(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128), 16),
        ("10M", TransformerConfig(vocab_size=8192, block_size=256, n_layer=8, n_head=8, n_embd=256), 8),
    ]:
        model = DecoderOnlyLM(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        T = cfg.block_size
        ids = torch.randint(0, cfg.vocab_size, (B, T))

        def step():
            loss = model(ids, labels=ids)[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        peak = matmul_peak()
        sec = alternate({"step": step}, repeats=5, warmup=2)["step"]
        n = model.num_parameters(non_embedding=True)  # includes the tied head once, as the LM-head matmul
        flops_per_token = 6 * n + 6 * cfg.n_layer * T * cfg.n_embd
        achieved = flops_per_token * B * T / sec
        rows.append([name, f"{n / 1e6:.2f} M", f"{achieved / 1e9:.1f}", f"{peak / 1e9:.1f}", f"{achieved / peak:.0%}"])
    save("cpu_efficiency", "CPU efficiency of a training step",
         table(["size", "parameters (non-embedding, incl. head)", "achieved GFLOP/s", "matmul peak GFLOP/s",
                "efficiency"], rows))


if __name__ == "__main__":
    main()
