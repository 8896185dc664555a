"""Where the time goes: PyTorch profiles of ours and Hugging Face's, side by side.

    python benchmarks/profiles.py

Two profiles, the same models and inputs as ``generate.py`` and ``encoder.py``:

1. greedy generation of 64 tokens after a 32-token prompt: ``DecoderOnlyLM.generate``
   against ``GPT2LMHeadModel.generate``. At batch 1 each new token is a handful
   of small matrix-vector products, so the count of PyTorch operator calls per
   token (each costs microseconds of dispatch) matters as much as the arithmetic.
2. one encoder forward, batch 8x256: ``EncoderOnlyLM.encode`` against ``BertModel``.
   Here the matrix products dominate, and both sides call the same kernels.

For each: total CPU time, operator calls, and the operators that take the most
self time. The result goes to benchmarks/results/profiles.md.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

import encoder
import generate
from common import save, table

TOP = 8


def profiled(fn) -> tuple[float, int, Counter, Counter]:
    """Run ``fn`` once under the profiler: (total self CPU ms, aten calls, ms per op, calls per op)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ms, calls = Counter(), Counter()
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            ms[e.key] += e.self_cpu_time_total / 1000
            calls[e.key] += e.count
    return sum(ms.values()), sum(calls.values()), ms, calls


def compare(name: str, fns: dict, per: int, unit: str) -> str:
    for fn in fns.values():  # warm-up
        fn()
    results = {label: profiled(fn) for label, fn in fns.items()}
    rows = [[label, f"{total / per:.3f}", f"{n / per:.0f}"] for label, (total, n, _, _) in results.items()]
    out = f"### {name}\n\n" + table(["code", f"aten self CPU ms per {unit}", f"aten calls per {unit}"], rows)
    for label, (total, _, ms, calls) in results.items():
        top = [[op, f"{t / per:.3f}", f"{100 * t / total:.0f}%", f"{calls[op] / per:.1f}"] for op, t in ms.most_common(TOP)]
        out += f"\n\n{label}, top operators:\n\n" + table(["operator", f"ms per {unit}", "share", f"calls per {unit}"], top)
    return out


def main() -> None:
    hf, ours, prompt, mask = generate.models()
    new = 64

    def ours_gen():
        with torch.no_grad():
            ours.generate(prompt, new)

    def hf_gen():
        with torch.no_grad():
            hf.generate(prompt, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                        pad_token_id=0)

    body = compare("Greedy generation, batch 1 (4.3 M parameters)",
                   {"DecoderOnlyLM.generate": ours_gen, "GPT2LMHeadModel.generate": hf_gen}, new, "token")

    enc, bert, ids, amask = encoder.models()

    def ours_enc():
        with torch.no_grad():
            enc.encode(ids, amask)

    def hf_enc():
        with torch.no_grad():
            bert(ids, attention_mask=amask)

    body += "\n\n" + compare("Encoder forward, batch 8x256 (5.3 M parameters)",
                             {"EncoderOnlyLM.encode": ours_enc, "BertModel": hf_enc}, 1, "forward")
    save("profiles", "Profiles: where the time goes", body)


if __name__ == "__main__":
    main()
