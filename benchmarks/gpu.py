"""GPU training throughput and model FLOPs utilisation (MFU).

Trains a GPT-2-small-sized DecoderOnlyLM (124 M parameters, context 1024) in
bf16 autocast with PyTorch's fused attention (flash attention on recent GPUs)
and prints tokens/s and MFU against the GPU's peak dense bf16 FLOP/s.

    python benchmarks/gpu.py                    # GPT-2 small, batch 16
    python benchmarks/gpu.py --compile          # with torch.compile
    python benchmarks/gpu.py --peak-tflops 312  # e.g. an A100
    python benchmarks/gpu.py --smoke            # a tiny model on any device, to check the script

MFU follows Chowdhery et al. (2022), appendix B: 6 N + 6 L T C FLOPs per token
(N parameters without position embeddings, L layers, T context, C width).
The default peak, 989 TFLOP/s, is NVIDIA's dense bf16 figure for the H100 and
H200 SXM.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_utils.device import autocast_dtype, get_device
from course_utils.transformer import DecoderOnlyLM, TransformerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny model, few steps")
    args = ap.parse_args()

    device = get_device(args.device)
    if args.smoke:
        cfg = TransformerConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64)
        args.batch, args.steps, args.warmup = 4, 3, 1
    else:
        cfg = TransformerConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                                activation="gelu_tanh")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = DecoderOnlyLM(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    step_model = torch.compile(model) if args.compile else model
    dtype = autocast_dtype(device)
    B, T = args.batch, cfg.block_size
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = step_model(ids, labels=ids)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    sec = (time.perf_counter() - t0) / args.steps
    n = model.num_parameters(non_embedding=True)
    flops_per_token = 6 * n + 6 * cfg.n_layer * T * cfg.n_embd
    tok_s = B * T / sec
    mfu = flops_per_token * tok_s / (args.peak_tflops * 1e12)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device: {name}, dtype: {dtype}, compile: {args.compile}")
    print(f"model: {model.num_parameters() / 1e6:.1f} M parameters, batch {B}x{T}, final loss {float(loss):.3f}")
    print(f"{sec * 1e3:.1f} ms/step, {tok_s:,.0f} tokens/s, MFU {mfu:.1%} of {args.peak_tflops:g} TFLOP/s")
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
