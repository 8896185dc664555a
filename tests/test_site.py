"""The built book (_build/html, made by `make book`) in a real browser.

Python's http.server serves _build/html on 127.0.0.1 (a free port) and
Playwright drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), headless;
no browser is ever downloaded. Without a Chromium the browser tests are
skipped with one line that says how to enable them, except where CI is set
(CI=true), where they fail. Each page opens in a fresh browser context (empty
storage, like a first visit), in a browser that Playwright starts with a new
empty --user-data-dir. Checked:

- every page of the table of contents answers 200, every file it loads from the
  site answers below 400, and the browser reports no console error or warning
  and no uncaught exception (the two known third-party exceptions below are
  matched narrowly, never a whole category);
- every image on those pages has loaded (naturalWidth > 0);
- the search page finds a word of chapter 9's title, on chapter 9 (or on the
  last chapter when there is no chapter 9; SITE_SEARCH_CHAPTER=NN picks
  another, SITE_SEARCH_WORD another word), and finds nothing for a made-up word;
- every chapter and lab page has a Colab link (and a Binder link) to this
  repository (`repository.url` and `branch` in _config.yml) whose path is the
  page's .ipynb and exists here;
- lab pages show the student version: every line of the release notebook's
  code, the `raise NotImplementedError()` stubs, no nbgrader marker and no line
  that only solutions/ holds (course_grading.leaks.secret_lines, the one leak
  check; a student edition has neither solutions/ nor course_grading, and its
  HTML is checked against the instructor's by tests/test_student_edition.py).

Screenshots of one chapter and one lab page go to _build/screenshots/ (CI
artifacts).

Requests to other hosts are blocked, not sent: the machines that build the book
have no network. The pages ask for three scripts from CDNs, which a reader's
browser fetches: MathJax (Sphinx's default `mathjax_path`) and, on pages whose
outputs hold Jupyter widgets (tqdm progress bars), RequireJS and the widgets'
HTML manager (myst-nb's `nb_ipywidgets_js`). The "Failed to load resource"
error that the block causes is accepted for exactly the URLs in THIRD_PARTY;
any other outside request, or any other error, fails the test. (So formulas
show as TeX source and progress bars are not drawn in the screenshots.)
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


NO_BROWSER = (f"no Chromium at {CHROMIUM}: to run the browser tests, `apt-get install -y chromium` "
              "(Debian's package) or point $CHROMIUM at a Chromium; no browser is ever downloaded")
if not os.access(CHROMIUM, os.X_OK) and not _ci():  # one line in pytest's summary, not one per test
    pytest.skip("browser tests skipped, " + NO_BROWSER, allow_module_level=True)
COLAB = "https://colab.research.google.com/github/"
BINDER = "https://mybinder.org/v2/gh/"
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")

#: Outside URLs the pages may ask for (blocked here, fetched by readers), and why.
THIRD_PARTY = {
    "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js":
        "MathJax 3 (sphinx.ext.mathjax's default mathjax_path): renders the formulas",
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js":
        "RequireJS (myst-nb's nb_ipywidgets_js), on pages whose outputs hold Jupyter widgets (tqdm bars)",
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js":
        "the Jupyter widgets HTML manager (myst-nb's nb_ipywidgets_js): draws those widgets",
}
#: Uncaught exceptions that come from the theme's own stack, matched exactly.
KNOWN_PAGE_ERRORS = {
    # sphinx-thebe 0.3.1 registers an inline script with app.add_js_file(None, body=...);
    # Sphinx 7.4's HTML builder adds it again as filename '' and cannot tell the two
    # apart, so every page declares the same constants twice. The first copy runs, so
    # nothing breaks; the test checks that the page holds exactly two identical copies.
    "Identifier 'THEBE_JS_URL' has already been declared": re.compile(
        r"<script>const THEBE_JS_URL = [^<]*</script>"),
}

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY = CONFIG.get("repository") or {}
REPO_URL = str(REPOSITORY.get("url", "")).rstrip("/")
BRANCH = str(REPOSITORY.get("branch") or "master")  # Jupyter Book's default
# the pages of _toc.yml as Jupyter Book reads them (sphinx-external-toc), without their suffixes
PAGES = [re.sub(r"\.(md|ipynb|rst)$", "", name) for name in parse_toc_yaml(ROOT / "_toc.yml")]
CHAPTERS = [p for p in PAGES if p.startswith("chapters/")]
LABS = [p for p in PAGES if p.startswith("labs/")]


def _search_chapter() -> str:
    wanted = os.environ.get("SITE_SEARCH_CHAPTER", "09")
    matches = [c for c in CHAPTERS if Path(c).name.startswith(wanted + "_")]
    if matches:
        return matches[0]
    if "SITE_SEARCH_CHAPTER" in os.environ:
        raise ValueError(f"SITE_SEARCH_CHAPTER={wanted!r} names no chapter of the toc: {CHAPTERS}")
    return CHAPTERS[-1] if CHAPTERS else ""


def _title_word(page: str) -> str:
    """The longest word (5 letters or more) of a page's first `# ` heading."""
    source = next(ROOT.glob(page + ".*"))
    text = source.read_text(encoding="utf-8")
    if source.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "markdown")
    title = next(line[2:] for line in text.splitlines() if line.startswith("# "))
    words = sorted(re.findall(r"[A-Za-z]{5,}", title), key=len, reverse=True)
    if not words:
        raise ValueError(f"the title of {page} ({title!r}) has no word of 5 letters or more; set SITE_SEARCH_WORD")
    return words[0].lower()


# ---------------------------------------------------------------------------
# Fixtures: the server, the browser, and one visit per page
# ---------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make book` first (`make test` does)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(f"Playwright for Python is missing ({err}): install the test extra, "
                    "pip install -e '.[test]'")
    if not os.access(CHROMIUM, os.X_OK):  # only where CI is set: elsewhere the module was skipped
        pytest.fail(NO_BROWSER + " (CI is set, so the browser tests are required)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Visit:
    """One page opened in a fresh context, with everything the browser reported."""

    def __init__(self, browser, site: str, path: str):
        self.site = site
        self.url = site + path
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.console: list[tuple[str, str, str]] = []
        self.page_errors: list[str] = []
        self.bad_responses: list[tuple[int, str]] = []
        self.blocked: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append((m.type, m.text, m.location.get("url", ""))))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e.message if hasattr(e, "message") else e)))
        self.page.on("response", self._response)
        self.response = self.page.goto(self.url, wait_until="load")
        self.page.wait_for_load_state("networkidle")

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.site) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def _response(self, response):
        if response.url.startswith(self.site) and response.status >= 400:
            self.bad_responses.append((response.status, response.url))

    def problems(self) -> list[str]:
        """Everything wrong that the browser reported, after the known third-party noise."""
        found = [f"{status} for {url}" for status, url in self.bad_responses]
        found += [f"request to another host: {url}" for url in self.blocked if url not in THIRD_PARTY]
        for kind, text, where in self.console:
            if kind not in ("error", "warning"):
                continue
            if kind == "error" and text.startswith("Failed to load resource") and where in self.blocked \
                    and where in THIRD_PARTY:
                continue
            found.append(f"console {kind}: {text} ({where})")
        html = self.page.content() if self.page_errors else ""
        for message in self.page_errors:
            pattern = KNOWN_PAGE_ERRORS.get(message)
            if pattern is not None:
                copies = pattern.findall(html)
                if len(copies) == 2 and copies[0] == copies[1]:
                    continue
            found.append(f"uncaught exception: {message}")
        return found

    def close(self) -> None:
        self.context.close()


IMAGES_JS = """async () => {
    const out = [];
    for (const img of Array.from(document.images)) {
        img.scrollIntoView();
        try { await img.decode(); } catch (e) {}
        out.push([img.currentSrc || img.src, img.complete, img.naturalWidth]);
    }
    return out;
}"""


@dataclass
class Seen:
    """What one page showed: gathered in one visit, then the context is closed."""

    status: int | None
    problems: list[str]
    images: list[list]
    hrefs: list[str]
    code: str
    text: str


def _screenshot_pages() -> dict[str, str]:
    chapter = _search_chapter()
    return {page: kind for kind, page in (("chapter", chapter), ("lab", LABS[0] if LABS else "")) if page}


@pytest.fixture(scope="module")
def visits(browser, site) -> dict[str, Seen]:
    """Every page of the toc, visited once, in order; screenshots taken on the way."""
    shots = _screenshot_pages()
    seen: dict[str, Seen] = {}
    for page in PAGES:
        v = Visit(browser, site, page + ".html")
        try:
            images = v.page.evaluate(IMAGES_JS)
            seen[page] = Seen(
                status=v.response.status if v.response else None,
                problems=v.problems(),
                images=images,
                hrefs=v.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"),
                code=v.page.eval_on_selector_all("pre", "els => els.map(e => e.innerText).join('\\n')"),
                text=v.page.inner_text("body"),
            )
            if page in shots:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                v.page.evaluate("() => window.scrollTo(0, 0)")
                v.page.screenshot(path=str(SCREENSHOTS / f"{shots[page]}_{Path(page).name}.png"))
        finally:
            v.close()
    return seen


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_the_book_has_chapters_and_labs():
    assert CHAPTERS, f"no chapters/ page in the toc ({PAGES})"
    assert LABS, f"no labs/ page in the toc ({PAGES})"


def test_every_page_loads_without_errors(visits):
    failures = {}
    for page, v in visits.items():
        problems = ([] if v.status == 200 else [f"page answered {v.status}"]) + v.problems
        if problems:
            failures[page] = problems
    assert not failures, "pages with problems:\n" + "\n".join(
        f"{page}:\n  " + "\n  ".join(p) for page, p in failures.items())


def test_every_image_loads(visits):
    broken, count = [], 0
    for page, v in visits.items():
        count += len(v.images)
        broken += [(page, src) for src, complete, width in v.images if not (complete and width > 0)]
    assert count > 0, "no image at all on the book's pages"
    assert not broken, f"images that did not load: {broken}"


def test_colab_and_binder_links_open_this_repository(visits):
    m = re.match(r"^https://github\.com/([^/]+)/([^/]+)$", REPO_URL)
    assert m, f"repository.url in _config.yml is not a GitHub repository: {REPO_URL!r}"
    org, repo = m.groups()
    problems = []
    for page in CHAPTERS + LABS:
        hrefs = visits[page].hrefs
        notebook = page + ".ipynb"
        colab = [h for h in hrefs if h.startswith(COLAB)]
        binder = [h for h in hrefs if h.startswith(BINDER)]
        if not colab:
            problems.append(f"{page}: no Colab link")
        for href in colab:
            rest = unquote(href[len(COLAB):])
            expected = f"{org}/{repo}/blob/{BRANCH}/{notebook}"
            if rest != expected:
                problems.append(f"{page}: Colab link {href} should open {expected}")
            path = rest.split(f"/blob/{BRANCH}/", 1)[-1]
            if not (ROOT / path).is_file():
                problems.append(f"{page}: Colab link opens {path}, which is not in the repository")
        if not binder:
            problems.append(f"{page}: no Binder link")
        for href in binder:
            parsed = urlparse(href)
            if not parsed.path.startswith(f"/v2/gh/{org}/{repo}/{BRANCH}") or notebook not in unquote(parsed.query):
                problems.append(f"{page}: Binder link {href} should open {org}/{repo}@{BRANCH}:{notebook}")
        repo_links = [h for h in hrefs if h.rstrip("/") == REPO_URL]
        if not repo_links:
            problems.append(f"{page}: no link to the repository {REPO_URL}")
    assert not problems, "\n".join(problems)


def _secret_lines() -> set[str]:
    """Lines that only solutions/ holds; none in a student edition, which has no solutions/."""
    if not (ROOT / "solutions").is_dir():
        return set()
    from course_grading.leaks import secret_lines  # the instructors' toolkit: not in a student edition

    return secret_lines(ROOT)


def test_lab_pages_show_the_student_version(visits):
    secret = _secret_lines()
    problems = []
    for page in LABS:
        nb = json.loads((ROOT / (page + ".ipynb")).read_text(encoding="utf-8"))
        code_lines = {line.strip() for line in visits[page].code.splitlines() if line.strip()}
        text = visits[page].text
        text_lines = {line.strip() for line in text.splitlines() if line.strip()}
        for marker in MARKERS:
            if marker in text:
                problems.append(f"{page}: shows the nbgrader marker {marker!r}")
        if "raise NotImplementedError()" not in code_lines:
            problems.append(f"{page}: no `raise NotImplementedError()` stub: is this the release version?")
        for cell in nb["cells"]:
            tags = cell.get("metadata", {}).get("tags", [])
            if cell["cell_type"] != "code" or {"remove-cell", "remove-input"} & set(tags):
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            missing = [line.strip() for line in source.splitlines() if line.strip() and line.strip() not in code_lines]
            if missing:
                problems.append(f"{page}: lines of the release notebook not shown: {missing[:3]}")
        leaked = sorted(secret & (text_lines | code_lines))
        if leaked:
            problems.append(f"{page}: shows solution or hidden-test lines: {leaked[:5]}")
    assert not problems, "\n".join(problems)


def test_search_finds_a_word_of_chapter_9(browser, site):
    chapter = _search_chapter()
    assert chapter, "no chapter to search for"
    word = os.environ.get("SITE_SEARCH_WORD") or _title_word(chapter)

    def search(query: str) -> tuple[str, list[str]]:
        v = Visit(browser, site, f"search.html?q={query}")
        try:
            v.page.wait_for_function(
                "() => { const s = document.querySelector('#search-results .search-summary');"
                " return s && /found|did not match/i.test(s.innerText); }", timeout=30_000)
            summary = v.page.inner_text("#search-results .search-summary")
            links = v.page.eval_on_selector_all("#search-results a", "els => els.map(e => e.getAttribute('href'))")
            assert not v.problems(), v.problems()
            return summary, links
        finally:
            v.close()

    summary, links = search(word)
    assert any(link.split("#")[0].split("?")[0] == chapter + ".html" for link in links), (
        f"searching {word!r} did not find {chapter}: {summary}; results {links}")
    summary, links = search("zqxjvkwq")
    assert not links and "did not match" in summary, f"a made-up word found pages: {summary} {links}"


def test_screenshots(visits):
    shots = _screenshot_pages()
    assert set(shots.values()) == {"chapter", "lab"}, f"need a chapter and a lab to photograph, got {shots}"
    for page, kind in shots.items():
        out = SCREENSHOTS / f"{kind}_{Path(page).name}.png"
        assert out.is_file() and out.stat().st_size > 10_000, f"{out} is missing or looks empty"
