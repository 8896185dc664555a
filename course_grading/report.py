"""Report: one HTML page per lab, for reading a class's results at a glance.

:func:`write_report` reads the recorded grades (:mod:`course_grading.results`,
``grades/<lab>.json``), splits them into the lab's graded parts
(:func:`course_grading.labs.graded_parts`) and writes ``grades/<lab>.html``
(and the CSV again) with:

* the distribution of total scores, and of each part's score, as figures;
* the parts most often missed (share of submissions without that part's full points);
* submissions held for review, with their evidence; submissions not graded, with
  the reason; graded ones whose run had problems;
* the flags, with the students they concern.

The page is self-contained: figures are PNG images inlined as ``data:`` URLs
(matplotlib, Agg backend), no script, and a Content-Security-Policy that lets
it load nothing from anywhere. Everything a student could have written
(reasons, evidence, flags) is escaped. Example::

    >>> write_report("lab02_attention")   # doctest: +SKIP
    PosixPath('.../grades/lab02_attention.html')
"""

from __future__ import annotations

import base64
import html
import io
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from course_grading import results
from course_grading.course import course_folder, find_root
from course_grading.labs import Part, graded_parts

__all__ = ["PartStats", "part_stats", "render", "write_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class PartStats:
    """One part across the graded submissions: e.g. part 2, 3 points, 7 of 10 without full points."""

    part: Part
    label: str
    scores: list[float]
    missed: int

    @property
    def missed_share(self) -> float:
        return self.missed / len(self.scores) if self.scores else 0.0


def _lab_notebook(root: Path, lab: str) -> dict | None:
    import json

    for kind in ("source", "release"):
        path = course_folder(root, kind) / lab / f"{lab}.ipynb"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def part_stats(rows: list[dict], notebook: dict | None) -> list[PartStats]:
    """Each part's scores over the ``graded`` rows (parts from ``notebook``; without
    it, one part per test cell named in the rows)."""
    graded = [r for r in rows if r.get("status") == "graded"]
    if notebook is not None:
        parts = graded_parts(notebook)
        names = [f"part {p.index} ({', '.join(p.solution_ids)})" for p in parts]
    else:
        ids = sorted({c for r in graded for c in (r.get("cells") or {})})
        parts = [Part(index=i + 1, test_ids=[c]) for i, c in enumerate(ids)]
        for p in parts:
            p.points = max((r["cells"].get(p.test_ids[0]) or 0 for r in graded if r.get("cells")), default=0)
        names = [f"part {p.index} ({p.test_ids[0]})" for p in parts]
    out = []
    for part, label in zip(parts, names):
        scores = [sum(float((r.get("cells") or {}).get(t) or 0) for t in part.test_ids) for r in graded]
        out.append(PartStats(part, label, scores, sum(s < part.points - 1e-9 for s in scores)))
    return out


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figures(rows: list[dict], stats: list[PartStats]) -> list[tuple[str, str]]:
    """(title, data URL) of each figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    graded = [r for r in rows if r.get("status") == "graded"]
    figs = []
    totals = [float(r.get("score") or 0) for r in graded]
    top = max([float(r.get("max_score") or 0) for r in graded] + totals + [1])
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.hist(totals, bins=min(20, max(1, int(top)) + 1), range=(-0.5, top + 0.5), color="#3b6ea5", edgecolor="white")
    ax.set_xlabel(f"score (of {top:g})")
    ax.set_ylabel("submissions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Total score, {len(graded)} graded submissions")
    figs.append(("Total score", _png(fig)))
    if stats:
        cols = min(3, len(stats))
        nrows = (len(stats) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
        for ax, s in zip(axes.flat, stats):
            pts = max(s.part.points, 1)
            ax.hist(s.scores, bins=min(12, int(pts) + 1), range=(-0.5, pts + 0.5), color="#5a9e6f", edgecolor="white")
            ax.set_title(f"part {s.part.index}: {s.missed} of {len(s.scores)} missed", fontsize=9)
            ax.set_xlabel(f"points (of {s.part.points:g})", fontsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in list(axes.flat)[len(stats):]:
            ax.axis("off")
        fig.tight_layout()
        figs.append(("Score per part", _png(fig)))
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(stats)))
        ordered = sorted(stats, key=lambda s: s.missed_share)
        ax.barh([f"part {s.part.index}" for s in ordered], [100 * s.missed_share for s in ordered], color="#c0504d")
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of graded submissions without full points")
        figs.append(("Parts most often missed", _png(fig)))
    return figs


def _table(header: list[str], body: list[list[str]], empty: str) -> str:
    if not body:
        return f"<p class='none'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _items(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else ([str(value)] if value else [])


def render(lab: str, rows: list[dict], notebook: dict | None = None) -> str:
    """The report page of ``lab`` from its recorded ``rows`` (dicts as in ``grades/<lab>.json``)."""
    rows = sorted(rows, key=lambda r: str(r.get("student")))
    stats = part_stats(rows, notebook)
    graded = [r for r in rows if r.get("status") == "graded"]
    held = [r for r in rows if r.get("status") == "held"]
    other = [r for r in rows if r.get("status") not in ("graded", "held")]
    totals = [float(r.get("score") or 0) for r in graded]
    top = max([float(r.get("max_score") or 0) for r in graded] or [0])
    summary = (f"{len(rows)} submissions: {len(graded)} graded, {len(held)} held for review, "
               f"{len(other)} not graded.")
    if totals:
        summary += (f" Median score {statistics.median(totals):g} of {top:g}, mean {statistics.fmean(totals):.1f};"
                    f" {sum(t >= top - 1e-9 for t in totals)} with full marks.")
    if any(r.get("sandboxed") is False for r in rows):
        summary += " Some submissions were graded UNSANDBOXED."
    figures = "".join(f"<figure><img alt='{html.escape(t)}' src='{url}'><figcaption>{html.escape(t)}</figcaption>"
                      "</figure>" for t, url in _figures(rows, stats))
    missed = _table(["part", "points", "without full points", "mean points"],
                    [[s.label, f"{s.part.points:g}", f"{s.missed} of {len(s.scores)} ({100 * s.missed_share:.0f} %)",
                      f"{statistics.fmean(s.scores):.2f}" if s.scores else "-"]
                     for s in sorted(stats, key=lambda s: -s.missed_share)], "No graded part.")
    held_t = _table(["student", "evidence", "flags"],
                    [[r["student"], "; ".join(_items(r.get("evidence"))) or "(no evidence recorded)",
                      "; ".join(_items(r.get("flags")))] for r in held], "None held.")
    other_t = _table(["student", "status", "reason"],
                     [[r["student"], r.get("status", ""), r.get("reason", "")] for r in other], "None.")
    problems_t = _table(["student", "score", "problems"],
                        [[r["student"], f"{float(r.get('score') or 0):g}", "; ".join(_items(r.get("problems")))]
                         for r in graded if r.get("problems")], "None.")
    by_flag: dict[str, list[str]] = {}
    for r in rows:
        for flag in _items(r.get("flags")):
            by_flag.setdefault(flag, []).append(r["student"])
    flags_t = _table(["flag", "submissions", "students"],
                     [[f, str(len(s)), ", ".join(s)] for f, s in sorted(by_flag.items(), key=lambda kv: -len(kv[1]))],
                     "No flag.")
    title = html.escape(f"Grades of {lab}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70em; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
figure {{ display: inline-block; margin: 0.5em 1em 0.5em 0; }} figcaption {{ font-size: 0.9em; color: #555; }}
img {{ max-width: 100%; }} .none {{ color: #666; }}
</style></head>
<body>
<h1>{title}</h1>
<p id="summary">{html.escape(summary)}</p>
<h2>Scores</h2>
{figures}
<h2 id="missed">Parts most often missed</h2>
{missed}
<h2 id="held">Held for review</h2>
{held_t}
<h2 id="not-graded">Not graded</h2>
{other_t}
<h2 id="problems">Graded, with problems</h2>
{problems_t}
<h2 id="flags">Flags</h2>
{flags_t}
<p>Every row: <code>{html.escape(lab)}.csv</code> beside this page.</p>
</body></html>
"""


def write_report(lab: str, root: str | os.PathLike | None = None) -> Path:
    """Write ``grades/<lab>.html`` and ``grades/<lab>.csv`` from the recorded grades; return the page's path."""
    root = find_root(root)
    rows = results.load(root, lab)
    if not rows:
        raise FileNotFoundError(f"no recorded grades for {lab} in {root / 'grades'}: "
                                f"grade it first (course-grade {lab})")
    results.save(root, lab, rows)
    page = root / "grades" / f"{lab}.html"
    page.write_text(render(lab, list(rows.values()), _lab_notebook(root, lab)), encoding="utf-8")
    return page
