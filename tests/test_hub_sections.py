"""Every optional "real model" cell of the book runs, offline, against a tiny random
model of the same class.

Those cells (a ```python block whose first line starts with ``# OPTIONAL``) are
shown in the book but not executed by its build, since they download a model
from the Hugging Face Hub. Here each one runs in a fresh Python process with
``HF_HUB_OFFLINE=1`` and a Hub cache (``HF_HUB_CACHE``) holding a tiny stand-in
under each model name it uses (``tests/fake_hub.py``), so an API change in
`transformers` or a mistake in the cell fails this test, not a student on Colab.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fake_hub

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(# OPTIONAL.*?)^```", re.M | re.S)
MODEL_NAME = re.compile(r"""["']([\w.-]+/[\w.-]+)["']""")


def optional_cells() -> list[tuple[str, int, str]]:
    """(chapter, number of the cell in it, code) of every optional cell."""
    cells = []
    for path in sorted((ROOT / "chapters").glob("*.md")):
        for k, match in enumerate(FENCE.finditer(path.read_text())):
            cells.append((path.stem, k, match.group(1)))
    return cells


CELLS = optional_cells()


def test_the_book_has_optional_cells_and_each_names_known_models():
    assert CELLS, "no optional cell found: did the marker change?"
    for chapter, k, code in CELLS:
        names = set(MODEL_NAME.findall(code))
        assert names, f"{chapter}, optional cell {k}: no Hub model name found"
        unknown = names - set(fake_hub.MODELS)
        assert not unknown, f"{chapter}, optional cell {k}: add a tiny stand-in for {sorted(unknown)} to fake_hub"


@pytest.mark.parametrize("chapter,k,code", CELLS, ids=[f"{c}-{k}" for c, k, _ in CELLS])
def test_optional_cell_runs_offline_on_a_tiny_model(chapter, k, code, tmp_path):
    cache = tmp_path / "hub"
    for name in set(MODEL_NAME.findall(code)):
        fake_hub.build(cache, name)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg"}
    script = tmp_path / "cell.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"{chapter}, optional cell {k} failed offline:\n{run.stderr[-3000:]}"
    assert run.stdout.strip(), f"{chapter}, optional cell {k} printed nothing"
