"""A battery of hostile and broken submissions for one lab, each with the score it deserves.

Every case starts from honest work (the release notebook with some parts
solved from the instructor's solution) and then breaks or attacks something:
the notebook's structure (deleted, edited, duplicated, reordered cells, lost
metadata, invalid JSON), the kernel (infinite loops, memory, ``os._exit``,
stray processes, stderr), or the grading itself (patched comparisons, hidden
tracebacks, the gradebook, the network, other people's files, IPython's
machinery rewired so that later cells run something else, answers delegated
to the package's reference implementations). The expected score is what the
honest part earns; the cheat must add nothing. Tampering with how later cells
run is *held* for review (no score exported). An honest variant (correct
answers written differently) must get full marks and never be held.

    python tests/hostile.py lab02_attention --out /tmp/battery   # writes <student>/<lab>/...
    python tests/hostile.py lab02_attention --list               # names, expected scores

Network attacks only ever connect to 127.0.0.1 and [::1] (``port``), where the
test suite listens; grading in the sandbox must make even those unreachable.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from course_grading.cells import cell_source, nbgrader_meta, strip_markers
from course_grading.course import find_root
from course_grading.labs import graded_parts


@dataclass
class Case:
    """One hostile submission: its files, the score it deserves and what the
    grading report must mention (lower-case words found in its reason,
    problems, repairs, flags or evidence). A ``held`` case must be held for
    review; ``expected`` is then the score an accepted review writes."""

    student: str
    what: str
    expected: float | None  # None: not graded at all
    files: dict[str, str]  # path inside <student>/<lab>/ -> content
    report: list[str] = field(default_factory=list)
    held: bool = False  # held for review: no score in the gradebook nor in the CSV


_src = cell_source


def _gid(cell: dict) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def _is_test(cell: dict) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and cell["cell_type"] == "code"


def _answer(cell: dict) -> str:
    """A solution cell's code without the markers (what a student would have written)."""
    return strip_markers(cell_source(cell))


def _functions(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]


def _code(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


class Lab:
    """The release and solution notebooks of a lab, and helpers to fill them in."""

    def __init__(self, release: dict, solution: dict):
        self.release, self.solution = release, solution
        self.parts = graded_parts(solution)
        self.points = [p.points for p in self.parts]
        self.total = sum(self.points)
        answers = {_gid(c): c for c in solution["cells"] if _gid(c)}
        self.answers = {gid: _answer(answers[gid]) for p in self.parts for gid in p.solution_ids}

    def solved(self, parts: list[int]) -> dict:
        """The release notebook with parts (1-based) solved."""
        ids = {gid for k in parts for gid in self.parts[k - 1].solution_ids}
        nb = copy.deepcopy(self.release)
        for cell in nb["cells"]:
            if _gid(cell) in ids:
                cell["source"] = self.answers[_gid(cell)]
        return nb

    def all(self) -> list[int]:
        return list(range(1, len(self.parts) + 1))

    def part_functions(self, k: int) -> list[str]:
        return [f for gid in self.parts[k - 1].solution_ids for f in _functions(self.answers[gid])]

    def append_to_part(self, nb: dict, k: int, code: str) -> dict:
        """Add ``code`` at the end of part k's last solution cell."""
        last = self.parts[k - 1].solution_ids[-1]
        for cell in nb["cells"]:
            if _gid(cell) == last:
                cell["source"] = _src(cell) + "\n\n" + code
        return nb

    def unsolved_with(self, code: str) -> dict:
        """The student version with ``code`` at the end of every part's last solution cell."""
        nb = self.solved([])
        for k in self.all():
            nb = self.append_to_part(nb, k, code)
        return nb

    def after_imports(self, nb: dict, code: str) -> dict:
        """Insert a student cell before the first solution cell."""
        first = next(i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("solution"))
        nb["cells"].insert(first, _code(code))
        return nb


def _redefine(functions: list[str], body: str) -> str:
    """Replace every function in ``functions`` by one with ``body``."""
    return "\n".join(f"def {f}(*args, **kwargs):\n" + "\n".join("    " + line for line in body.splitlines())
                     for f in functions)


def battery(lab: str, root: str | Path | None = None, *, port: int = 9, marker: str = "hostile-leftover",
            submitted: str | Path | None = None) -> list[Case]:
    """The hostile submissions for ``lab`` (at least 15).

    Args:
        lab: e.g. ``"lab02_attention"``.
        root: the course root holding ``solutions/`` and ``labs/``.
        port: loopback port the network attack connects to.
        marker: a word in the command line of the process a submission leaves behind.
        submitted: where the honest student ``correct`` is stored (attacked by ``other_student``).
    """
    root = find_root(root)
    nb_name = f"{lab}.ipynb"
    lab_ = Lab(json.loads((root / "labs" / lab / nb_name).read_text()),
               json.loads((root / "solutions" / lab / nb_name).read_text()))
    P, T, n = lab_.points, lab_.total, len(lab_.parts)
    submitted = Path(submitted or root / "submitted")
    dump = lambda nb: json.dumps(nb, indent=1)  # noqa: E731
    cases: list[Case] = []

    def add(student, what, expected, nb, report=(), name=nb_name, held=False):
        cases.append(Case(student, what, expected, {name: nb if isinstance(nb, str) else dump(nb)}, list(report),
                          held))

    add("correct", "the instructor's solution", T, lab_.solved(lab_.all()))
    add("untouched", "the release notebook as handed out", 0, lab_.release)
    add("partial", "only part 1 solved", P[0], lab_.solved([1]))

    nb = lab_.solved([1])
    for cell in nb["cells"]:
        if _is_test(cell):
            cell["source"] = "pass"
    add("tests_edited", "part 1 solved, every test cell replaced by `pass`", P[0], nb, ["edited"])

    nb = lab_.solved([1])
    for cell in nb["cells"]:
        if _is_test(cell):
            cell["metadata"]["nbgrader"]["points"] = 100
    add("points_raised", "part 1 solved, every test worth 100 points in the metadata", P[0], nb, ["points"])

    nb = lab_.solved(lab_.all())
    nb["cells"] = [c for c in nb["cells"] if not _is_test(c)]
    add("tests_deleted", "all solved, every test cell deleted", T, nb, ["re-inserted"])

    nb = lab_.solved(lab_.all())
    for cell in nb["cells"]:
        cell["metadata"] = {"id": "colab-cell"} if cell["cell_type"] == "code" else {}
        cell.pop("id", None)
    nb["metadata"] = {"colab": {"provenance": []}, "kernelspec": {"name": "python3", "display_name": "Python 3"}}
    add("colab_copy", "all solved, copied into a fresh Colab notebook (no nbgrader metadata) and renamed",
        T, nb, ["metadata", "named"], name=f"Copy of {nb_name}")

    nb = lab_.solved(lab_.all())
    cells = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            stub = next(c for c in lab_.release["cells"] if _gid(c) == _gid(cell))
            cells.append(copy.deepcopy(stub))  # a duplicate left with the template
            helper = copy.deepcopy(cell)  # ... and the answer split in two cells with the same id
            helper["source"] = "import math as _math_split  # split off from the cell below"
            cells += [helper, cell]
        else:
            cells.append(cell)
    nb["cells"] = cells
    add("duplicated_split", "all solved; each solution cell duplicated (template kept above it) and split",
        T, nb, ["duplicated or split"])

    nb = lab_.solved(lab_.all())
    tests = [c for c in nb["cells"] if _is_test(c)]
    rest = [c for c in nb["cells"] if not _is_test(c)]
    first_solution = next(i for i, c in enumerate(rest) if c.get("metadata", {}).get("nbgrader", {}).get("solution"))
    nb["cells"] = rest[:first_solution] + tests[::-1] + rest[first_solution:]
    add("reordered", "all solved, test cells moved above the solutions in reverse order", T, nb, ["reordered"])

    loop = "import time\nwhile True:  # sleeps, so that the battery burns no CPU while it waits\n    time.sleep(0.5)"
    nb = lab_.append_to_part(lab_.solved(lab_.all()), n, _redefine(lab_.part_functions(n), loop))
    add("infinite_loop", f"all solved, but part {n}'s functions loop forever", T - P[-1], nb, ["interrupted"])

    body = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + loop
    nb = lab_.append_to_part(lab_.solved(lab_.all()), 2, _redefine(lab_.part_functions(2), body))
    add("unstoppable_loop", "all solved, but part 2's functions ignore interrupts and loop forever "
        "(the later parts are graded in a fresh kernel)", T - P[1], nb, ["timeout", "fresh kernel"])

    body = ("hoard = []\nfor _ in range(40):  # 4 GB at most, even without a limit\n"
            "    hoard.append(b'\\x01' * (100 * 2**20))\nreturn hoard")
    nb = lab_.append_to_part(lab_.solved(lab_.all()), n, _redefine(lab_.part_functions(n), body))
    add("memory_bomb", f"all solved, but part {n}'s functions allocate gigabytes", T - P[-1], nb, ["memory"])

    nb = lab_.append_to_part(lab_.solved(lab_.all()), 2, _redefine(lab_.part_functions(2), "import os\nos._exit(0)"))
    add("os_exit", "all solved, but part 2's functions call os._exit(0)", P[0], nb, ["kernel died", "not run"])

    nb = lab_.solved(lab_.all())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell["source"] = "import sys\nprint('debug output', file=sys.stderr)\n" + _src(cell)
    wrap = "\n".join(f"_quiet_{f} = {f}\ndef {f}(*args, **kwargs):\n    import sys\n"
                     f"    print('a warning', file=sys.stderr)\n    return _quiet_{f}(*args, **kwargs)"
                     for f in lab_.part_functions(n))
    nb = lab_.append_to_part(nb, n, wrap)
    add("stderr", f"all solved; solution cells write to stderr, and part {n}'s functions too when called",
        T - P[-1], nb, ["stderr"])

    patch = ("import math, numpy, torch\n"
             "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
             "numpy.allclose = lambda *a, **k: True\nnumpy.array_equal = lambda *a, **k: True\n"
             "numpy.testing.assert_allclose = lambda *a, **k: None\n"
             "torch.testing.assert_close = lambda *a, **k: None\nmath.isclose = lambda *a, **k: True\n\n"
             "class Magic:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
             "    def __lt__(self, other): return True\n    def __le__(self, other): return True\n"
             "    def __gt__(self, other): return True\n    def __ge__(self, other): return True\n"
             "    def __getattr__(self, name): return Magic()\n    def __call__(self, *a, **k): return Magic()\n"
             "    def __bool__(self): return True\n    def __float__(self): return 0.0\n"
             "    def __sub__(self, o): return Magic()\n"
             "    __rsub__ = __add__ = __radd__ = __mul__ = __truediv__ = __abs__ = __neg__ = __sub__\n")
    nb = lab_.after_imports(lab_.solved([1]), patch)
    for k in range(2, n + 1):
        nb = lab_.append_to_part(nb, k, _redefine(lab_.part_functions(k), "return Magic()"))
    add("monkeypatch", "part 1 solved; allclose/equal/isclose patched, other parts return objects equal to anything",
        P[0], nb, ["comparison patching"])

    hide = ("import textwrap\nfrom IPython import get_ipython\n_ip = get_ipython()\n"
            "_ip.showtraceback = lambda *a, **k: None\n_run_cell = _ip.run_cell\n"
            "def _forgiving(raw_cell, *args, **kwargs):\n"
            "    wrapped = 'try:\\n' + textwrap.indent(raw_cell, '    ') + '\\n    pass\\nexcept BaseException:\\n    pass\\n'\n"
            "    return _run_cell(wrapped, *args, **kwargs)\n_ip.run_cell = _forgiving\n")
    add("hides_errors", "nothing solved; tracebacks hidden and every cell wrapped in try/except "
        "(plain nbgrader gives full marks)", 0, lab_.after_imports(lab_.solved([]), hide),
        ["did not run to its end", "tampering"])

    steal = (f"import glob, os, sqlite3\nroot = {str(root)!r}\n"
             "found = glob.glob(os.path.join(root, '**', 'gradebook.db'), recursive=True)\n"
             "found += [p for up in range(1, 8) for p in glob.glob(os.path.join(*['..'] * up, 'gradebook.db'))]\n"
             "for path in found:\n    try:\n        con = sqlite3.connect(path)\n"
             "        print(len(con.execute('SELECT source FROM source_cell').fetchall()), 'hidden cells read')\n"
             "        con.execute('UPDATE grade SET auto_score = 1000, manual_score = 1000')\n"
             "        con.execute(\"UPDATE grade_cells SET max_score = 1000\")\n        con.commit()\n"
             "    except Exception as e:\n        print('no luck with', path, e)\n"
             "print('gradebooks found:', found)\n")
    add("gradebook", "part 1 solved; looks for gradebook.db to read hidden tests and raise every grade",
        P[0], lab_.after_imports(lab_.solved([1]), steal), ["the gradebook"])

    answers = "\n\n".join(lab_.answers[g] for p in lab_.parts[1:] for g in p.solution_ids)
    net = (f"import socket\nfor family, address in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n"
           "    try:\n        s = socket.socket(family, socket.SOCK_STREAM)\n        s.settimeout(5)\n"
           f"        s.connect((address, {int(port)}))\n        s.sendall(b'LEAK')\n"
           "        code = b''\n        while chunk := s.recv(65536):\n            code += chunk\n"
           "        exec(code.decode())  # answers from a helper\n        break\n"
           "    except OSError as e:\n        print('no network:', e)\n")
    add("network", "part 1 solved; fetches the other answers from a server on 127.0.0.1 / [::1]",
        P[0], lab_.after_imports(lab_.solved([1]), net), ["network access"])

    other = submitted / "correct" / lab / nb_name
    copy_code = (f"import json\ntry:\n    _nb = json.load(open({str(other)!r}))\n"
                 "    for _cell in _nb['cells']:\n        if _cell['cell_type'] == 'code' and 'def ' in ''.join(_cell['source']):\n"
                 "            try:\n                exec(''.join(_cell['source']))\n            except Exception:\n                pass\n"
                 "except OSError as e:\n    print('cannot read it:', e)\n")
    add("other_student", "nothing solved; executes the answers of the student `correct` from their file",
        0, lab_.unsolved_with(copy_code), ["files outside the submission"])

    source = root / "solutions" / lab / nb_name
    key = (f"import json, os\nfor _p in ({str(source)!r}, os.path.expanduser('~/.bash_history'), '/root/.ssh/id_rsa'):\n"
           "    try:\n        _text = open(_p).read()\n    except OSError as e:\n        print('cannot read', _p, e)\n"
           "        continue\n    if _p.endswith('.ipynb'):\n        for _cell in json.loads(_text)['cells']:\n"
           "            if 'BEGIN SOLUTION' in ''.join(_cell['source']):\n"
           "                exec(''.join(_cell['source']))\n")
    add("instructor_files", "nothing solved; executes the instructor's solutions/ notebook and reads the home folder",
        0, lab_.unsolved_with(key), ["files outside the submission"])

    spawn = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(900)', "
             f"{marker!r}], start_new_session=True)\n")
    add("leftover_process", "all solved; starts a detached process that outlives its kernel",
        T, lab_.after_imports(lab_.solved(lab_.all()), spawn), ["process control"])

    add("invalid_json", "all solved, but the file was truncated", None,
        dump(lab_.solved(lab_.all()))[:-300], ["invalid json"])

    # Rewiring IPython so that later cells run something else: held for review, however it is reached.
    last_line = ("def _last_line(lines):\n    code = [line for line in lines if line.strip()]\n"
                 "    return code[-1:] or lines\n")
    transformer = "ip = get_ipython()\n" + last_line + "ip.input_transformers_post.append(_last_line)\n"
    add("input_transformer", "nothing solved; an input transformer rewrites every later cell to its last line "
        "(the grader's nonce print)", 0, lab_.after_imports(lab_.solved([]), transformer),
        ["passed in the notebook's kernel", "would score"], held=True)

    singleton = ("import importlib\n_m = importlib.import_module('IPy' + 'thon.core.' + 'interactive' + 'shell')\n"
                 "_sh = getattr(getattr(_m, 'Interactive' + 'Shell'), 'inst' + 'ance')()\n" + last_line +
                 "getattr(_sh, '_'.join(['input', 'trans' + 'formers', 'post'])).append(_last_line)\n")
    add("transformer_singleton", "nothing solved; the same transformer, registered through the shell class's "
        "singleton with attribute names built at run time (no flag catches it)", 0,
        lab_.after_imports(lab_.solved([]), singleton), ["passed in the notebook's kernel"], held=True)

    ast_last = ("import ast, importlib\n_m = importlib.import_module('IPy' + 'thon')\n"
                "_sh = getattr(_m, 'get_' + 'ipython')()\n"
                "class _Last(ast.NodeTransformer):\n    def visit_Module(self, node):\n"
                "        node.body = node.body[-1:]\n        return node\n"
                "getattr(_sh, 'ast_' + 'transformers').append(_Last())\n")
    add("ast_transformer", "nothing solved; an AST transformer keeps only the last statement of every later cell",
        0, lab_.after_imports(lab_.solved([]), ast_last), ["passed in the notebook's kernel"], held=True)

    hook = ("import importlib\n_sh = getattr(importlib.import_module('IPy' + 'thon'), 'get_' + 'ipython')()\n" +
            last_line + "def _arm(*args):\n    hooks = getattr(_sh, 'input_' + 'transformers_post')\n"
            "    if _last_line not in hooks:\n        hooks.append(_last_line)\n"
            "getattr(_sh, 'events').register('pre_run_' + 'cell', _arm)\n")
    add("event_hook", "nothing solved; an event hook installs the last-line transformer later, when the next cell "
        "starts", 0, lab_.after_imports(lab_.solved([]), hook), ["passed in the notebook's kernel"], held=True)

    if lab in DELEGATED:
        k, code = DELEGATED[lab]
        nb = lab_.solved(lab_.all())
        for gid in lab_.parts[k - 1].solution_ids:
            for cell in nb["cells"]:
                if _gid(cell) == gid:
                    cell["source"] = code if gid == lab_.parts[k - 1].solution_ids[0] else "pass"
        add("delegated", f"all solved, but part {k} only calls the package's reference implementation", T - P[k - 1],
            nb, ["reference implementation"])

    if lab in HONEST:
        nb = copy.deepcopy(lab_.release)
        for cell in nb["cells"]:
            if _gid(cell) in HONEST[lab]:
                cell["source"] = HONEST[lab][_gid(cell)]
        nb = lab_.after_imports(nb, "import numpy as np\nimport matplotlib.pyplot as plt\n"
                                    "print('my notes: trying things out')\n")
        add("honest_variant", "all solved correctly in the student's own way: loops, helpers, other names, "
            "numpy where allowed, prints and a plot", T, nb)
    return cases


#: Per lab, a part answered by calling the package's reference implementation (scores 0 for that part).
DELEGATED: dict[str, tuple[int, str]] = {
    "lab02_attention": (1, "from course_utils.attention import scaled_dot_product_attention\n\n\n"
                           "def attention(q, k, v, mask=None):\n"
                           "    return scaled_dot_product_attention(q, k, v, mask=mask)\n"),
    "lab03_tokenization": (1, "from course_utils import tokenization as _tk\n\n\n"
                              "def get_pair_counts(ids):\n    return _tk.get_pair_counts(ids)\n\n\n"
                              "def merge(ids, pair, new_id):\n    return _tk.merge(ids, pair, new_id)\n"),
    "lab09_distributed": (1, "from course_utils.memory import sharded_memory\n\n\n"
                             "def per_device_bytes(n_params, strategy, world_size, bytes_weights=2, bytes_grads=2,\n"
                             "                     bytes_optimizer=12):\n"
                             "    if strategy not in STRATEGIES or world_size < 1:\n"
                             "        raise ValueError('unknown strategy or no device')\n"
                             "    precision = {(2, 2, 12): 'mixed-bf16', (4, 4, 8): 'fp32', (2, 2, 4): 'bf16'}[\n"
                             "        (bytes_weights, bytes_grads, bytes_optimizer)]\n"
                             "    m = sharded_memory(n_params, strategy, world_size, precision=precision)\n"
                             "    return {'weights': int(m.weights), 'gradients': int(m.gradients),\n"
                             "            'optimizer_states': int(m.optimizer_states)}\n"),
    "lab10_modern_blocks": (1, "from course_utils.transformer import RMSNorm\n\n\n"
                               "def rms_norm(x, weight, eps=1e-6):\n"
                               "    norm = RMSNorm(x.shape[-1], eps=eps)\n"
                               "    with torch.no_grad():\n"
                               "        norm.weight.copy_(weight)\n"
                               "        return norm(x)\n"),
}

#: Per lab, correct answers written differently (solution cell id -> code): never held, full marks.
HONEST: dict[str, dict[str, str]] = {
    "lab02_attention": {
        "attention": (
            "def _scores(queries, keys):\n"
            "    return torch.matmul(queries, keys.transpose(-1, -2)) / keys.size(-1) ** 0.5\n\n\n"
            "def attention(q, k, v, mask=None):\n"
            "    s = _scores(q, k)\n"
            "    if mask is not None:\n"
            "        s = torch.where(mask, s, torch.full_like(s, float('-inf')))\n"
            "    w = F.softmax(s, dim=-1)\n"
            "    return torch.matmul(w, v), w\n\n\n"
            "_eye = torch.eye(2)[None]\n"
            "print('attention of a 1x2x2 example:', attention(_eye, _eye, _eye)[0])\n"),
        "causal_mask": (
            "def causal_mask(T, device=None):\n"
            "    m = torch.zeros(T, T, dtype=torch.bool, device=device)\n"
            "    for i in range(T):\n"
            "        m[i, : i + 1] = True\n"
            "    return m\n"),
        "split_merge_heads": (
            "def split_heads(x, n_head):\n"
            "    batch, length, width = x.shape\n"
            "    if width % n_head:\n"
            "        raise ValueError('n_head must divide the width')\n"
            "    return x.reshape(batch, length, n_head, width // n_head).permute(0, 2, 1, 3)\n\n\n"
            "def merge_heads(x):\n"
            "    batch, heads, length, size = x.shape\n"
            "    return x.permute(0, 2, 1, 3).contiguous().view(batch, length, heads * size)\n"),
        "multi_head_attention": (
            "def multi_head_attention(x, w_qkv, b_qkv, w_out, b_out, n_head, mask=None):\n"
            "    wq, wk, wv = w_qkv.chunk(3, dim=0)\n"
            "    bq, bk, bv = b_qkv.chunk(3)\n"
            "    heads = [split_heads(F.linear(x, w, b), n_head) for w, b in ((wq, bq), (wk, bk), (wv, bv))]\n"
            "    out, weights = attention(*heads, mask=mask)\n"
            "    return F.linear(merge_heads(out), w_out, b_out), weights\n\n\n"
            "plt.figure()\nplt.plot([0, 1], [1, 0])\nplt.title('a plot of my own')\nplt.show()\n"),
        "offset_attention": (
            "def offset_attention(weights, offset):\n"
            "    w = weights.detach().cpu().numpy()\n"
            "    return float(np.diagonal(w, offset=-offset, axis1=-2, axis2=-1).mean())\n"),
    },
    "lab03_tokenization": {
        "get_pair_counts": (
            "from collections import Counter\n\n\n"
            "def get_pair_counts(ids):\n    return Counter(zip(ids, ids[1:]))\n"),
        "merge": (
            "def merge(ids, pair, new_id):\n"
            "    result, skip = [], False\n"
            "    for a, b in zip(ids, list(ids[1:]) + [None]):\n"
            "        if skip:\n            skip = False\n            continue\n"
            "        if (a, b) == tuple(pair):\n            result.append(new_id)\n            skip = True\n"
            "        else:\n            result.append(a)\n"
            "    return result\n"),
        "train_bpe": (
            "def train_bpe(text, n_merges):\n"
            "    tokens = list(text.encode('utf-8'))\n"
            "    learned = {}\n"
            "    for step in range(n_merges):\n"
            "        counts = get_pair_counts(tokens)\n"
            "        if not counts:\n            break\n"
            "        best = max(counts.values())\n"
            "        pair = min(p for p, c in counts.items() if c == best)\n"
            "        learned[pair] = 256 + step\n"
            "        tokens = merge(tokens, pair, 256 + step)\n"
            "    print(f'learned {len(learned)} merges')\n"
            "    return learned\n"),
        "encode": (
            "def encode(text, merges):\n"
            "    tokens = list(text.encode('utf-8'))\n"
            "    for pair, new_id in merges.items():  # in the order learned\n"
            "        tokens = merge(tokens, pair, new_id)\n"
            "    return tokens\n"),
        "decode": (
            "def _token_bytes(merges):\n"
            "    table = {i: bytes([i]) for i in range(256)}\n"
            "    for (a, b), new_id in merges.items():\n"
            "        table[new_id] = table[a] + table[b]\n"
            "    return table\n\n\n"
            "def decode(ids, merges):\n"
            "    table = _token_bytes(merges)\n"
            "    return b''.join(table[i] for i in ids).decode('utf-8', errors='replace')\n"),
        "positional_encoding": (
            "def positional_encoding(T, d, device=None):\n"
            "    pe = np.zeros((T, d), dtype=np.float64)\n"
            "    for pos in range(T):\n"
            "        for i in range(0, d, 2):\n"
            "            angle = pos / 10000 ** (i / d)\n"
            "            pe[pos, i] = np.sin(angle)\n"
            "            if i + 1 < d:\n"
            "                pe[pos, i + 1] = np.cos(angle)\n"
            "    return torch.tensor(pe, dtype=torch.float32, device=device)\n"),
        "nearest_neighbours": (
            "def nearest_neighbours(E, idx, k):\n"
            "    sims = F.cosine_similarity(E.double(), E[idx].double()[None], dim=-1)\n"
            "    order = sorted((j for j in range(len(E)) if j != idx), key=lambda j: -float(sims[j]))\n"
            "    return order[:k]\n"),
    },
    "lab09_distributed": {
        "per_device_bytes": (
            "def per_device_bytes(n_params, strategy, world_size, bytes_weights=2, bytes_grads=2, bytes_optimizer=12):\n"
            "    if strategy not in ('ddp', 'zero1', 'zero2', 'zero3') or world_size < 1:\n"
            "        raise ValueError(f'cannot place {strategy!r} on {world_size} devices')\n"
            "    stage = {'ddp': 0, 'zero1': 1, 'zero2': 2, 'zero3': 3}[strategy]\n"
            "    shard = math.ceil(n_params / world_size)\n"
            "    out = {}\n"
            "    for name, size, first_stage in (('weights', bytes_weights, 3), ('gradients', bytes_grads, 2),\n"
            "                                    ('optimizer_states', bytes_optimizer, 1)):\n"
            "        out[name] = size * (shard if stage >= first_stage else n_params)\n"
            "    return out\n"),
        "data_parallel": (
            "def split_batch(x, rank, world_size):\n"
            "    if rank < 0 or rank >= world_size or x.shape[0] % world_size != 0:\n"
            "        raise ValueError('rank out of range or a batch that does not split evenly')\n"
            "    return x.chunk(world_size)[rank]\n\n\n"
            "def average_gradients(model):\n"
            "    grads = [p.grad for p in model.parameters() if p.grad is not None]\n"
            "    bucket = torch.cat([g.flatten() for g in grads])  # one collective, as DDP's buckets\n"
            "    dist.all_reduce(bucket)\n"
            "    bucket = bucket / dist.get_world_size()\n"
            "    offset = 0\n"
            "    for g in grads:\n"
            "        g.copy_(bucket[offset:offset + g.numel()].view_as(g))\n"
            "        offset += g.numel()\n"),
        "compute_optimal": (
            "import numpy as np\n\n\n"
            "def cluster_flops(n_devices, peak_flops, days, utilization=0.4):\n"
            "    if min(n_devices, peak_flops, days) <= 0 or not (0 < utilization <= 1):\n"
            "        raise ValueError('bad cluster')\n"
            "    seconds = days * 24 * 60 * 60\n"
            "    return float(n_devices) * peak_flops * seconds * utilization\n\n\n"
            "def compute_optimal_split(flops, tokens_per_param=20.0):\n"
            "    if flops <= 0 or tokens_per_param <= 0:\n"
            "        raise ValueError('the budget and the ratio must be positive')\n"
            "    n = float(np.sqrt(flops / 6.0 / tokens_per_param))\n"
            "    print(f'{n:.3g} parameters')\n"
            "    return n, n * tokens_per_param\n"),
        "communication": (
            "RING = {'all_reduce': 2, 'reduce_scatter': 1, 'all_gather': 1}\n"
            "STEPS = {'ddp': ['all_reduce'], 'zero1': ['reduce_scatter', 'all_gather'],\n"
            "         'zero2': ['reduce_scatter', 'all_gather'],\n"
            "         'zero3': ['all_gather', 'all_gather', 'reduce_scatter']}\n\n\n"
            "def bytes_sent_per_device(n_params, strategy, world_size, bytes_per_element=2):\n"
            "    if strategy not in STEPS or world_size < 1:\n"
            "        raise ValueError(strategy)\n"
            "    payload = n_params * bytes_per_element\n"
            "    return float(sum(RING[c] * (world_size - 1) * payload / world_size for c in STEPS[strategy]))\n"),
    },
    "lab10_modern_blocks": {
        "rms_norm": (
            "def rms_norm(x, weight, eps=1e-6):\n"
            "    rows = x.double().reshape(-1, x.shape[-1])\n"
            "    out = torch.stack([row / math.sqrt(float((row ** 2).sum()) / len(row) + eps) for row in rows])\n"
            "    return (out.reshape(x.shape) * weight.double()).float()\n"),
        "rope": (
            "def rope_cos_sin(positions, head_dim, theta=10000.0):\n"
            "    half = head_dim // 2\n"
            "    angles = [[p * theta ** (-2 * i / head_dim) for i in range(half)] for p in positions.tolist()]\n"
            "    cos = torch.tensor([[math.cos(a) for a in row] * 2 for row in angles], dtype=torch.float32)\n"
            "    sin = torch.tensor([[math.sin(a) for a in row] * 2 for row in angles], dtype=torch.float32)\n"
            "    return cos, sin\n\n\n"
            "def apply_rope(x, cos, sin):\n"
            "    half = x.shape[-1] // 2\n"
            "    a, b, c, s = x[..., :half], x[..., half:], cos[:, :half], sin[:, :half]\n"
            "    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)\n"),
        "relative_position_bucket": (
            "def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):\n"
            "    rel = relative_position.detach().cpu().numpy().astype(np.int64)\n"
            "    if bidirectional:\n"
            "        n = num_buckets // 2\n"
            "        offset, d = np.where(rel > 0, n, 0), np.abs(rel)\n"
            "    else:\n"
            "        n, offset, d = num_buckets, 0, np.maximum(-rel, 0)\n"
            "    exact = n // 2\n"
            "    scale = np.log(np.maximum(d, 1) / exact) / np.log(max_distance / exact) * (n - exact)\n"
            "    large = np.minimum(exact + np.floor(scale).astype(np.int64), n - 1)\n"
            "    return torch.from_numpy(np.asarray(offset + np.where(d < exact, d, large), dtype=np.int64))\n"),
        "gqa": (
            "from course_utils.attention import scaled_dot_product_attention as plain_attention\n\n\n"
            "def repeat_kv(x, n_rep):\n"
            "    B, H_kv, T, D = x.shape\n"
            "    return x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D)\n\n\n"
            "def grouped_query_attention(q, k, v, mask=None):\n"
            "    n_rep = q.shape[1] // k.shape[1]\n"
            "    return plain_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask=mask)[0]\n"),
        "swiglu": (
            "def swiglu(x, w_gate, w_up, w_down):\n"
            "    gate = F.linear(x, w_gate)\n"
            "    return F.linear(gate * torch.sigmoid(gate) * F.linear(x, w_up), w_down)\n\n\n"
            "plt.figure()\nplt.plot([-3, 0, 3], [-0.14, 0, 2.86])\nplt.title('silu, roughly')\nplt.show()\n"),
    },
}


def write(cases: list[Case], submitted: str | Path, lab: str) -> None:
    """Write each case as ``submitted/<student>/<lab>/<file>``."""
    for case in cases:
        folder = Path(submitted) / case.student / lab
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in case.files.items():
            (folder / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lab")
    ap.add_argument("--out", help="write the battery into this submitted/ folder")
    ap.add_argument("--port", type=int, default=9, help="loopback port of the network attack")
    ap.add_argument("--list", action="store_true", help="print the cases and their expected scores")
    args = ap.parse_args(argv)
    cases = battery(args.lab, port=args.port, submitted=args.out)
    if args.out:
        write(cases, args.out, args.lab)
        (Path(args.out) / f"expected_{args.lab}.json").write_text(json.dumps(
            {c.student: {"expected": c.expected, "what": c.what, "report": c.report, "held": c.held}
             for c in cases}, indent=1))
    for c in cases:
        score = "-" if c.expected is None else "held" if c.held else f"{c.expected:g}"
        print(f"{c.student:22s} {score:>5s}  {c.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
