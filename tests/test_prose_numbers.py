"""No hand-typed results: a number a chapter computes is glued into its prose, never typed.

A chapter's prose quotes what its cells compute with ``{glue:text}`` (see
:mod:`course_utils.notebook`), so that the text holds whatever the run
printed. This file looks for the opposite: a number typed literally in a
chapter's prose that the same chapter's executed cells also print or glue.

The heuristic, chapter by chapter (:func:`unglued_numbers`):

1. **Computed numbers**: every number in the chapter's executed outputs (the
   text of streams and results, read from the book build's execution cache,
   ``_build/.jupyter_cache``, which ``make test`` fills before pytest runs) and
   in its glued values (``_build/jupyter_execute/chapters/*.glue.json``), plus
   each of those decimals rounded to fewer decimal places, and to a whole
   number when it is 10 or more (``1.6124`` also counts as ``1.612``, ``1.61``
   and ``1.6``; ``46.7`` as ``47``), because prose rounds.
2. **Typed numbers**: every number in the chapter's markdown cells, after
   removing what is not typed prose: glue roles and every other role
   (``{cite}``, ``{term}``, ``{ref}``...), inline code, math (``$...$``,
   ``$$...$$``), code blocks, link targets, labels, directive options and HTML
   tags. Admonitions (exercises, their solutions) are prose and are checked.
   Thousands separators are ignored (``8,000`` is ``8000``), and so is a
   trailing ``%`` (``12.5 %`` is ``12.5``). Numbers that are part of a name
   (``GPT-2``, ``fp16``, ``k1``) are not numbers.
3. A typed number is reported when it is also a computed number, unless it is
   **an input**: a number that appears literally in the chapter's own code
   (``max_new_tokens=25``, ``RECALL_STEPS = 2500``: the prose may repeat a
   setting the reader can see in the cell), a whole number below 10 (counts,
   chapter and layer numbers, "two layers"), a year ("the 2017 paper": a whole
   number from 1900 to 2099 typed without a comma), a format's width ("16-bit",
   "10 mantissa bits"), or a phrase in :data:`ALLOWED`, the reviewed list of
   inputs, definitions, cited values and worked exercise arithmetic that the
   code does not spell literally, each with its reason.

What it catches: a result copied from an output into the text ("the LSTM
reaches 1.61 nats", "accuracy 22.9 %", "a 32-token window"), also when the
prose rounds it. It checks the run that built the book: a copy of a result
that the run printed is caught.

What it misses: results stated in words rather than digits ("stays near
chance", "translates every held-out sentence", "the best order is n = 2"),
which the chapters word so that they hold whatever the run prints (or glue
as text), and which a reviewer must read for; results that are single
digits; a result equal to an allowed number and typed within a few words of
its allowed phrase; a typed result that has gone stale (the run now prints
another value, so the old one no longer matches anything); numbers printed in another form than the prose uses (a fraction
printed as ``0.219`` and typed as "22 %", a count printed as ``1e+03``);
numbers a chapter computes without printing or gluing them; and a typed
number that happens to equal an input of the code. ``intro.md`` and
``glossary.md`` have no code of their own, so nothing here checks them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("*.md"))

#: Typed numbers that a chapter's code prints too but that are inputs, definitions,
#: cited values or worked arithmetic, not results of its runs: chapter -> [(the
#: phrase, as typed in the prose, that holds the number; why it may be typed)].
#: Keep it short and give the reason; a result goes in a glue role instead.
#: An entry that no longer matches any prose fails the test (no stale entries).
ALLOWED: dict[str, list[tuple[str, str]]] = {
    "01_introduction": [
        ("on 80 %", "the share of questions the reference model was trained on, a setting of _facts_split"),
        ("other 20 %", "the share of questions held out, a setting of _facts_split"),
    ],
    "02_next_word": [
        ("72 MiB: a key", "exercise 6's worked arithmetic, 2 x 12 x 1024 x 768 x 4 bytes"),
        ("learning rate of 1e-3", "the transformer's learning rate, a setting in RECALL_MODELS"),
    ],
    "05_transformer": [
        ("46 natural languages and 13 programming languages", "BLOOM's training data, cited"),
        ("198,272 for", "exercise 2's worked arithmetic, 12C^2 + 13C at C = 128"),
        ("66,304 for", "exercise 2's worked arithmetic, 4C^2 + 6C at C = 128"),
    ],
    "06_prompting": [
        ("the query 15", "exercise 4's given token counts"),
        ("11 coinciding pairs", "exercise 1's count, derived by hand from the six task definitions"),
        ("10 to 100 examples", "how many examples GPT-3's window held, cited"),
    ],
    "07_generation": [
        ("probability 0.1 is", "an illustrative probability"),
        ("0.05, 0.10, 0.20", "exercise 3's cumulative sums of the distribution it gives"),
        ("top-p = 0.85", "a setting that exercise 3 gives"),
        ("0.5 + 0.3 = 0.8", "exercise 3's worked arithmetic"),
    ],
    "08_pretraining": [
        ("mixes 22", "the Pile's sources, cited"),
        ("100,000 words", "Gopher's quality rules, cited"),
        ("3 to 10 characters", "Gopher's quality rules, cited"),
        ("fewer than 80 %", "Gopher's quality rules, cited"),
        ("reported 46 %", "PaLM's utilization, cited"),
        ("a 10 B model", "worked arithmetic: ten times the size, a hundred times the cost"),
        ("at least 80 words", "a setting of course_utils.curation.as_documents"),
    ],
    "09_memory_quantization": [
        ("about 24 GB to train", "the course's rule of thumb, 24 bytes per parameter"),
        ("about 24 bytes per parameter", "the course's rule of thumb"),
        ("24 GB for a billion", "the course's rule of thumb"),
        ("with 24 GB of memory", "the GPU that exercise 1 gives"),
        ("= 16 bytes per parameter", "mixed precision's bytes per parameter, as counted in ZeRO (cited)"),
        ("takes 16 bytes per parameter", "mixed precision's bytes per parameter, as counted in ZeRO (cited)"),
        ("about 16 bytes per parameter", "mixed precision's bytes per parameter, as counted in ZeRO (cited)"),
        ("from -128 to 127", "the definition of int8"),
        ("maps to 127", "the definition of absmax quantization"),
        ("100/127", "exercise 4's worked arithmetic"),
        ("140 GB in bf16", "exercise 2's worked arithmetic, 70 B parameters x 2 bytes"),
    ],
    "11_scaling": [
        ("to over 16 billion parameters", "the range of Hoffmann et al.'s models, cited"),
    ],
    "10_distributed": [
        ("10. Training across devices", "the chapter's number in its title"),
        ("and 12 for what the optimizer keeps", "bytes per parameter of mixed-precision Adam, the ZeRO paper's K = 12"),
    ],
}

#: A number as typed: digits with optional thousands commas, decimals and exponent.
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?(?![\w]|\.\d)")


def canonical(text: str) -> str | None:
    """A number's canonical spelling, e.g. ``'8,000'`` -> ``'8000'``, ``'0.50'`` -> ``'0.5'``, ``'1e-3'`` -> ``'0.001'``."""
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    out = format(value.normalize(), "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def number_spans(text: str) -> list[tuple[str, str, int]]:
    """(canonical, as typed, start) for each number of ``text`` that is not part of a name.

    Example: ``number_spans("GPT-2 had 1.5 billion")`` gives ``[('1.5', '1.5', 10)]``.
    """
    found = []
    for m in NUMBER.finditer(text):
        if re.search(r"[A-Za-z]-$", text[max(0, m.start() - 2):m.start()]):
            continue  # GPT-2, int-8: part of a name
        value = canonical(m.group(0))
        if value is not None:
            found.append((value, m.group(0), m.start()))
    return found


def numbers(text: str) -> list[tuple[str, str]]:
    """(canonical, as typed) for each number of ``text`` that is not part of a name.

    Example: ``numbers("GPT-2 had 1.5 billion, 12.5 % of 8,000")`` gives
    ``[('1.5', '1.5'), ('12.5', '12.5'), ('8000', '8,000')]``.
    """
    return [(value, typed) for value, typed, _ in number_spans(text)]


DURATION = re.compile(r"\s*((s|secs?|seconds?|ms|min|mins|minutes?|h|hours?)\b|s/it\b|[\w.]*/s\b)")
CLOCK = re.compile(r"\d+:\d\d")  # a progress bar's elapsed and remaining time, 00:13<00:02


def is_duration(text: str, start: int, typed: str) -> bool:
    """Whether the number typed at ``text[start:]`` is a wall-clock duration or a speed.

    Example: in ``"300 updates in 13 s"``, ``"[00:13<00:02]"`` and ``"13.2it/s"``
    the 13 is one; in ``"13 programming languages"`` it is not.
    """
    after = text[start + len(typed):]
    if DURATION.match(after):
        return True
    return any(m.start() <= start < m.end() for m in CLOCK.finditer(text, max(0, start - 4), start + len(typed) + 4))


def roundings(value: str) -> set[str]:
    """``value`` and its roundings to fewer decimals (and to a whole number from 10 on).

    Example: ``roundings("46.75")`` is ``{'46.75', '46.8', '47'}``.
    """
    out = {value}
    d = Decimal(value)
    if "." not in value:
        return out
    places = len(value.split(".")[1])
    for p in range(1, places):
        for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN):
            out.add(canonical(str(d.quantize(Decimal(1).scaleb(-p), rounding=mode))))
    if abs(d) >= 10:
        out.add(canonical(str(d.quantize(Decimal(1), rounding=ROUND_HALF_UP))))
    return out


# --- what counts as typed prose ---------------------------------------------------------

FENCE = re.compile(r"^(\s*(?:\d+\.|[-*+])?\s*)(`{3,}|~{3,}|:{3,})\s*(\{([\w:-]+)\})?(.*)$")
#: directives whose body is prose (and is checked); any other fenced block is code or math
PROSE_DIRECTIVES = {"admonition", "note", "tip", "warning", "important", "caution", "attention", "hint", "seealso",
                    "dropdown", "topic", "sidebar", "epigraph", "figure", "margin", "glossary"}


def prose(markdown: str) -> str:
    """The typed prose of one markdown cell: code, math, roles, links' targets and markup removed.

    Example: ``prose("We use $k = 0.01$ and {glue:text}`acc`, see [Lab 1](x.ipynb).")``
    is ``"We use  and , see Lab 1."``
    """
    kept, stack = [], []  # stack of (fence, keep the body?)
    for line in markdown.splitlines():
        m = FENCE.match(line)
        if m and stack and m.group(2)[0] == stack[-1][0][0] and len(m.group(2)) >= len(stack[-1][0]) \
                and not m.group(3) and not m.group(5).strip():
            stack.pop()  # the closing fence of the innermost block
            continue
        if m and (not stack or stack[-1][1]):
            directive = m.group(4)
            stack.append((m.group(2), directive in PROSE_DIRECTIVES))
            if directive in PROSE_DIRECTIVES:
                kept.append(m.group(5))  # an admonition's title is prose
            continue
        if stack and not stack[-1][1]:
            continue  # inside code or math
        if re.match(r"^\s*:[\w-]+:", line) or re.match(r"^\s*\([\w-]+\)=\s*$", line):
            continue  # a directive's option or a label
        kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)  # display math
    text = re.sub(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", " ", text, flags=re.S)
    text = re.sub(r"(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$", "", text)  # inline math
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", "", text)  # roles: glue, cite, term, ref, numref, eq...
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    text = re.sub(r"\]\([^)\s]*\)", "]", text)  # a link's target (its text stays)
    text = re.sub(r"<https?://[^>]*>|https?://\S+", "", text)  # bare addresses
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<[^>\n]+>", "", text)  # HTML tags
    return text.replace("[", "").replace("]", "")


# --- the executed chapter ------------------------------------------------------------

def executed_chapter(chapter: str, build: Path = BUILD):
    """The chapter as the book build executed it: a notebook with its outputs, from the execution cache."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    source = read_myst_markdown_notebook((ROOT / "chapters" / f"{chapter}.md").read_text(encoding="utf-8"))
    try:
        _, nb = get_cache(build / ".jupyter_cache").merge_match_into_notebook(source)
    except KeyError:
        pytest.fail(f"chapters/{chapter}.md has no executed version in {build / '.jupyter_cache'}: "
                    "build the book first (`make book`; `make test` does it)")
    return nb


def glued_values(chapter: str, build: Path = BUILD) -> list[str]:
    """The text of each value the chapter glues, as the build recorded it."""
    path = build / "jupyter_execute" / "chapters" / f"{chapter}.glue.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [v.get("data", {}).get("text/plain", "") for v in data.values()]


def output_texts(nb) -> Iterable[str]:
    """The text of every output of every code cell: streams, results, displays (their text/plain)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                yield out.get("text", "")
            elif "data" in out:
                text = out["data"].get("text/plain", "")
                yield "".join(text) if isinstance(text, list) else text


def unglued_numbers(nb, glued: Iterable[str] = (), allowed: Iterable[tuple[str, str]] = ()) -> dict[str, list[str]]:
    """Numbers typed in ``nb``'s prose that its outputs (or glued values) also show: {number: [where]}.

    ``nb`` is an executed notebook (markdown cells, code cells with outputs);
    ``where`` is the typed number with some words around it. See the module's
    docstring for what counts as computed, typed and an input.
    """
    allowed = list(allowed)
    computed: set[str] = set()  # results: the same on every run
    timings: set[str] = set()  # wall-clock durations and speeds: they change from machine to machine
    for text in [*output_texts(nb), *glued]:
        for value, typed, start in number_spans(text):
            timed = is_duration(text, start, typed)
            (timings if timed else computed).update(roundings(value))
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    code = re.sub(r"(?<=\d)_(?=\d)", "", code)  # 2_500 is 2500
    inputs = {value for value, _ in numbers(code)}
    found: dict[str, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        text = prose(cell.source)
        for value, typed, start in number_spans(text):
            whole = "." not in value
            if value in inputs or (whole and int(value) < 10):
                continue
            if value not in computed and not (value in timings and is_duration(text, start, typed)):
                continue  # a duration matches only a typed duration ("trains in 144 s")
            if whole and 1900 <= int(value) <= 2099 and typed == value:
                continue  # a year ("the 2017 paper"); a count of that size is typed with a comma
            if re.match(r"(-|\s+)((mantissa|exponent)\s+)?bits?\b", text[start + len(typed):]):
                continue  # a format's width ("16-bit", "10 mantissa bits"): a definition
            context = " ".join(text[max(0, start - 60):start + len(typed) + 60].split())
            if any(typed in phrase and phrase in context for phrase, _ in allowed):
                continue
            found.setdefault(value, []).append(context[20:-20] if len(context) > 80 else context)
    return found


# --- the tests ---------------------------------------------------------------------

def _notebook(cells: list[tuple[str, str, list[str]]]):
    """A synthetic executed notebook from (cell_type, source, stream outputs)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for kind, source, outputs in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in outputs]
            nb.cells.append(cell)
    return nb


SYNTHETIC = [
    ("markdown", "We train for 2,500 updates on batches of 64 with $\\eta = 0.001$.", []),
    ("code", "STEPS = 2_500\nBATCH = 64\nacc = train(STEPS, BATCH)\nprint(f'accuracy {acc:.1%}, loss {loss:.4f}')",
     ["accuracy 22.9%, loss 1.6124\nGPT-2 small: 72 MiB\n"]),
]


def test_detector_catches_a_typed_result():
    nb = _notebook(SYNTHETIC + [("markdown", "The model reaches an accuracy of 22.9 % and a loss of 1.61 nats.", [])])
    found = unglued_numbers(nb)
    assert set(found) == {"22.9", "1.61"}, found
    assert "22.9 %" in found["22.9"][0]


def test_detector_accepts_glued_results_inputs_and_names():
    nb = _notebook(SYNTHETIC + [
        ("markdown", "The model reaches {glue:text}`acc` after 2,500 updates of 64 sequences, as in `print(22.9)`.\n"
                     "GPT-2 needs $72$ MiB, see [the table](table-72.html) {cite}`radford2019language`.\n\n"
                     "```python\nprint(1.61)\n```\n\n"
                     "````{admonition} Solution\n:class: dropdown\nThe loss falls; check it with\n"
                     "```python\nloss == 1.6124\n```\n````", []),
    ])
    assert unglued_numbers(nb) == {}


def test_detector_matches_durations_only_with_durations():
    """A run's timings differ from machine to machine: a cited count equal to one is no copy."""
    timed = ("code", "train()", ["300 updates in 13 s\n", "train: 100%|####| 150/150 [00:46<00:00, 21.4it/s]\n"])
    cited = ("markdown", "Trained on 13 programming languages, 46 natural ones and 21 scripts.", [])
    assert unglued_numbers(_notebook(SYNTHETIC + [timed, cited])) == {}
    copied = ("markdown", "The run takes 13 s, and the bar shows 46 seconds.", [])
    assert set(unglued_numbers(_notebook(SYNTHETIC + [timed, copied]))) == {"13", "46"}


def test_detector_reads_admonitions_and_allow_list():
    typed = ("markdown", "````{admonition} Solution\n:class: dropdown\nIt needs 72 MiB.\n````", [])
    nb = _notebook(SYNTHETIC + [typed])
    assert set(unglued_numbers(nb)) == {"72"}
    assert unglued_numbers(nb, allowed=[("needs 72 MiB", "worked arithmetic")]) == {}
    assert set(unglued_numbers(nb, allowed=[("needs 72 GB", "another phrase")])) == {"72"}


def test_number_reading():
    assert numbers("GPT-2 had 1.5 billion, 12.5 % of 8,000 in fp16; k1 and 1e-3.") == [
        ("1.5", "1.5"), ("12.5", "12.5"), ("8000", "8,000"), ("0.001", "1e-3")]
    assert roundings("46.75") == {"46.75", "46.8", "47"}
    assert prose("We use $k = 0.01$ and {glue:text}`acc`, see [Lab 1](x.ipynb).") == "We use  and , see Lab 1."


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_glues_the_numbers_it_computes(chapter):
    nb = executed_chapter(chapter)
    found = unglued_numbers(nb, glued_values(chapter), ALLOWED.get(chapter, []))
    assert not found, (f"chapters/{chapter}.md types numbers that its code computes; glue them "
                       f"(course_utils.notebook.glue and {{glue:text}}), word the sentence so that it holds "
                       f"whatever the run prints, or, for an input, add it to ALLOWED with the reason: "
                       + "; ".join(f"{v}: {ctx}" for v, ctxs in found.items() for ctx in ctxs))


def test_allow_list_is_current():
    """Every allowed phrase names a chapter, gives a reason and is still in that chapter's prose."""
    for chapter, entries in ALLOWED.items():
        assert chapter in CHAPTERS, chapter
        import jupytext

        text = " ".join(" ".join(prose(c.source).split()) for c in jupytext.read(ROOT / "chapters" / f"{chapter}.md").cells
                        if c.cell_type == "markdown")
        for phrase, why in entries:
            assert why.strip() and number_spans(phrase), (chapter, phrase)
            assert phrase in text, f"ALLOWED[{chapter!r}]: {phrase!r} is no longer in the prose; remove it"
