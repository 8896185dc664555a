"""Encoder forward throughput: EncoderOnlyLM's encoder vs transformers.BertModel.

Same weights (EncoderOnlyLM.from_hf), fp32 on the CPU, inference mode, the
encoder body only on both sides (BertModel without its pooler, and without the
masked-LM head on ours).

    python benchmarks/encoder.py
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, BertModel
from transformers.utils import logging

from common import alternate, save, table
from course_utils.transformer import EncoderOnlyLM


def models() -> tuple[EncoderOnlyLM, BertModel, torch.Tensor, torch.Tensor]:
    """Ours and a BertModel with the same weights (about 5 M parameters), ids (8, 256) and their mask."""
    logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=256)
    mlm = BertForMaskedLM(cfg).eval()
    ours = EncoderOnlyLM.from_hf(mlm).eval()
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    ids = torch.randint(0, cfg.vocab_size, (8, 256))
    return ours, bert, ids, torch.ones_like(ids)


def main() -> None:
    ours, bert, ids, mask = models()
    B, T = ids.shape
    with torch.no_grad():
        diff = (ours.encode(ids, mask) - bert(ids, attention_mask=mask).last_hidden_state).abs().max().item()
    assert diff < 1e-4, diff

    def ours_fn():
        with torch.no_grad():
            ours.encode(ids, mask)

    def hf_fn():
        with torch.no_grad():
            bert(ids, attention_mask=mask)

    t = alternate({"ours": ours_fn, "hf": hf_fn}, repeats=9, warmup=2)
    tok = B * T
    body = table(["model", "tokens/s", "speed-up"],
                 [["EncoderOnlyLM.encode", tok / t["ours"], f"{t['hf'] / t['ours']:.2f}x"],
                  ["BertModel", tok / t["hf"], "1.00x"]])
    body += f"\n\n{sum(p.numel() for p in bert.parameters()) / 1e6:.2f} M parameters, batch {B}x{T}; outputs agree to {diff:.1e}."
    save("encoder", "Encoder forward, fp32 CPU", body)


if __name__ == "__main__":
    main()
