"""The CUDA path, checked against references on the same GPU.

    python benchmarks/cuda_check.py            # on a machine with a CUDA GPU
    python benchmarks/cuda_check.py --device cpu --quick   # the same checks on the CPU, smaller

Each check runs the course's code on the device and compares it with a
reference computed there too; nothing is timed here except the recall run
(see ``gpu.py`` for throughput and MFU). Prints a markdown table, one row per
check, and exits with status 1 if any check fails:

1. GPT-2 logits: ``DecoderOnlyLM.from_hf`` against ``GPT2LMHeadModel``, fp32 (TF32 off).
2. The same under bf16 autocast: the mean |logit difference| stays small.
3. Attention: the course's causal attention against
   ``torch.nn.functional.scaled_dot_product_attention``.
4. Greedy generation: with and without the KV cache, and against HF ``generate``.
5. Sampling with a seeded CUDA generator: the same ids twice.
6. Key-value recall (8 pairs): the chapter's transformer for a fixed number of
   steps reaches the accuracy it reaches on the CPU (> 90 %).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from course_utils.attention import causal_mask, scaled_dot_product_attention
from course_utils.device import get_device
from course_utils.rnn import associative_recall_experiment
from course_utils.transformer import DecoderOnlyLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="fewer recall steps (for a CPU dry run)")
    args = ap.parse_args()
    device = get_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows: list[tuple[str, str, bool]] = []

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=48,
                                    bos_token_id=0, eos_token_id=0, initializer_range=0.2)).eval().to(device)
    ours = DecoderOnlyLM.from_hf(hf).eval().to(device)
    ids = torch.randint(1, 97, (4, 40), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        diff = (ours(ids)[0] - hf(ids).logits).abs().max().item()
    rows.append(("GPT-2 logits, fp32", f"max abs diff {diff:.1e}", diff < 1e-4))

    if device.type == "cuda":
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = ours(ids)[0].float(), hf(ids).logits.float()
        mean = (a - b).abs().mean().item()
        rows.append(("GPT-2 logits, bf16 autocast", f"mean abs diff {mean:.1e}", mean < 5e-2))

    q, k, v = (torch.randn(2, 4, 33, 16, generator=torch.Generator().manual_seed(s)).to(device) for s in (2, 3, 4))
    mine, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(33, device=device))
    diff = (mine - torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max().item()
    rows.append(("causal attention vs torch SDPA", f"max abs diff {diff:.1e}", diff < 1e-5))

    prompt = ids[:1, :8]
    cached = ours.generate(prompt, 24, use_cache=True)
    uncached = ours.generate(prompt, 24, use_cache=False)
    reference = hf.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0,
                            attention_mask=torch.ones_like(prompt))
    same = torch.equal(cached, uncached) and torch.equal(cached, reference)
    rows.append(("greedy generate: cache, no cache, HF", "identical" if same else "DIFFERENT", same))

    draws = [ours.generate(prompt, 24, do_sample=True, top_k=20, top_p=0.9, temperature=0.8,
                           generator=torch.Generator(device=device).manual_seed(7)) for _ in range(2)]
    same = torch.equal(draws[0], draws[1])
    rows.append(("seeded sampling on the device", "reproducible" if same else "NOT reproducible", same))

    steps = 300 if args.quick else 3000
    t0 = time.perf_counter()
    recall = associative_recall_experiment(models=("transformer",), time_budget_s=3600, max_steps=steps,
                                           progress=False, device=device, n_eval=1000)["transformer"]
    sec = time.perf_counter() - t0
    ok = recall["accuracy"] > 0.9 or args.quick
    rows.append((f"recall, 8 pairs, {steps} steps", f"{recall['accuracy']:.1%} in {sec:.0f} s "
                 f"({1e3 * recall['seconds'] / recall['steps']:.1f} ms/step)"
                 + (" (quick: not checked)" if args.quick else ""), ok))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device: {name}, torch {torch.__version__}\n")
    print("| check | result | ok |\n|---|---|---|")
    for check, result, passed in rows:
        print(f"| {check} | {result} | {'yes' if passed else 'NO'} |")
    return 0 if all(p for _, _, p in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
