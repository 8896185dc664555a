"""Benchmark: train our byte-level BPE and Hugging Face's on ~1 MB of English text.

Run with ``python benchmarks/bpe_training.py`` (options: ``--help``). The text is
what Python ships, so nothing is downloaded: the help topics in
``pydoc_data.topics`` (about 0.47 MB), topped up to the target size with the
docstrings of the standard library's top-level modules (read with ``ast``,
nothing is imported). Prints a markdown table: median training time over
``--repeats`` runs, the ratio of the two, and the compression (UTF-8 bytes per
token) each tokenizer reaches on the training text.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from course_utils.tokenization import BPETokenizer, compare_tokenizers, train_hf_bpe  # noqa: E402


def english_corpus(n_bytes: int = 1_000_000) -> str:
    """About ``n_bytes`` of English prose: pydoc topics first, then stdlib docstrings."""
    from pydoc_data.topics import topics

    parts = [topics[key] for key in sorted(topics)]
    size = sum(len(p.encode("utf-8")) + 1 for p in parts)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        if size >= n_bytes:
            break
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
                    size += len(doc.encode("utf-8")) + 1
    text = "\n".join(parts)
    return text.encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1_000_000, help="corpus size in bytes")
    parser.add_argument("--vocab-size", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per tokenizer (median)")
    args = parser.parse_args()

    text = english_corpus(args.bytes)
    n_bytes = len(text.encode("utf-8"))
    t_ours, ours = median_seconds(
        lambda: BPETokenizer().train(text, args.vocab_size, progress=False), args.repeats
    )
    t_hf, hf = median_seconds(lambda: train_hf_bpe(text, args.vocab_size), args.repeats)
    rows = compare_tokenizers(text, {"ours": ours, "hf": hf})

    print(f"Corpus: {n_bytes:,} bytes of English; vocab_size {args.vocab_size:,}; "
          f"median of {args.repeats} run(s)\n")
    print("| tokenizer | train time (s) | vs HF | tokens | bytes/token | round-trip |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name, label, seconds in (("ours", "ours (pure Python)", t_ours),
                                 ("hf", "HF tokenizers (Rust)", t_hf)):
        row = rows[name]
        print(f"| {label} | {seconds:.2f} | {seconds / t_hf:.1f}x | {row['tokens']:,} "
              f"| {row['bytes_per_token']:.2f} | {'yes' if row['round_trip'] else 'NO'} |")


if __name__ == "__main__":
    main()
