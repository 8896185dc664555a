"""quantize_model on the shipped `prose` reference model: the linear weights
really shrink about 4x and perplexity stays within 1 % of fp32."""

import torch
import torch.nn as nn

from course_utils import pretrained
from course_utils.data import random_batch
from course_utils.quantization import QuantizedLinear, evaluate_quantization, quantize_model


def linear_weight_bytes(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            total += sum(b.numel() * b.element_size() for name, b in m.named_buffers() if name.startswith("weight"))
        elif isinstance(m, nn.Linear) and m.weight is not getattr(model, "wte").weight:
            total += m.weight.numel() * m.weight.element_size()
    return total


def test_int8_shrinks_linear_weights_and_keeps_perplexity():
    ref = pretrained.load("prose")
    model = ref.model
    q = quantize_model(model, "int8-absmax-row")
    ratio = linear_weight_bytes(model) / linear_weight_bytes(q)
    assert ratio >= 3.5, f"linear weights shrank only {ratio:.2f}x"
    # validation-like batches: shipped tokenizer on held-out prose (the recipe's layout)
    from course_utils.data import prose_text

    eot = ref.tokenizer.special_tokens["<|endoftext|>"]
    text = prose_text("validation", progress=False)
    ids = torch.tensor([i for para in text.split("\n\n")[:300] for i in ref.tokenizer.encode(para) + [eot]])
    g = torch.Generator().manual_seed(0)
    batches = [random_batch(ids, 128, 8, generator=g) for _ in range(8)]
    rows = {r.scheme: r for r in evaluate_quantization(model, batches, schemes=["int8-absmax-row"], progress=False)}
    assert abs(rows["int8-absmax-row"].perplexity_change) <= 0.01, rows
    assert rows["fp32"].perplexity < 200  # the model is trained: far below the 2,049-token uniform
