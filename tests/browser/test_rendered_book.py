"""The built HTML book as a reader sees it, opened from disk in headless Chromium.

Runs after `make html` (`make test` orders it so). With no network, every page must load
with no failed or remote requests, show rendered maths, load its figures and render its
explorers, and no output may show a Python warning, traceback or progress bar; the
navigation must reach every chapter. A screenshot of each page is saved under
`_build/screenshots`. test_explorers.py moves the explorers' controls.

Without Chromium the tests are skipped with a message saying so; CI sets
`RECUTILS_REQUIRE_BROWSER=1`, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
# The flags this machine's closed network needs (FIELD-NOTES): no background requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'


def toc_pages() -> list[str]:
    """Every page in `_toc.yml`, as paths relative to the book root without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in [toc] + toc.get("parts", []):
        pages += [entry["file"] for entry in part.get("chapters", [])]
    return pages


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        message = (
            "the browser test did NOT run: no Chromium found (install Debian's `chromium`, "
            "or set CHROMIUM to its path)"
        )
        if os.environ.get("RECUTILS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if not (HTML / "book").is_dir():
        pytest.fail(f"no built book in {HTML}: run `make html` first")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class LoadedPage:
    """A page opened from disk, with what went wrong while loading it."""

    def __init__(self, browser, name: str):
        self.path = HTML / f"{name}.html"
        assert self.path.exists(), f"{self.path} was not built"
        self.failed: list[str] = []
        self.remote: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("request", self._note_remote)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.path.as_uri(), wait_until="load")
        self._wait_for_renderers()

    def _note_remote(self, request) -> None:
        if not request.url.startswith(("file:", "data:", "blob:", "about:")):
            self.remote.append(request.url)

    def _wait_for_renderers(self) -> None:
        # MathJax typesets after load; its startup promise settles when it is done.
        self.page.evaluate("() => window.MathJax?.startup?.promise ?? null")


@pytest.fixture(scope="module")
def pages(browser):
    opened = {}

    def open_page(name: str) -> LoadedPage:
        if name not in opened:
            opened[name] = LoadedPage(browser, name)
            opened[name].page.screenshot(path=str(SCREENSHOTS / f"{Path(name).name}.png"), full_page=True)
        return opened[name]

    yield open_page
    for loaded in opened.values():
        loaded.page.close()


@pytest.mark.parametrize("name", toc_pages())
def test_page_loads_everything_from_disk(pages, name):
    loaded = pages(name)
    assert loaded.failed == [], f"{name}: failed requests {loaded.failed}"
    assert loaded.remote == [], f"{name}: requests leave the machine {loaded.remote}"
    assert loaded.errors == [], f"{name}: script errors {loaded.errors}"


@pytest.mark.parametrize("name", toc_pages())
def test_maths_is_typeset(pages, name):
    page = pages(name).page
    maths = page.locator(".math").count()
    raw = page.evaluate(
        "() => [...document.querySelectorAll('.math')]"
        ".filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60))"
    )
    assert raw == [], f"{name}: {len(raw)} of {maths} formulas left as raw TeX, e.g. {raw[:3]}"


@pytest.mark.parametrize("name", toc_pages())
def test_figures_load(pages, name):
    images = pages(name).page.evaluate(
        "() => [...document.querySelectorAll('article img')]"
        ".map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"
    )
    broken = [image["src"] for image in images if not image["ok"]]
    assert broken == [], f"{name}: images that did not load {broken}"


def test_notebook_figures_and_widgets_exist(pages):
    """The checks above are not vacuous: the chapters have figures, explorers and formulas."""
    chapters = [name for name in toc_pages() if (ROOT / f"{name}.ipynb").exists()]
    figures = sum(pages(name).page.locator("article img").count() for name in chapters)
    explorers = sum(pages(name).page.locator(".rx-explorer .rx-controls").count() for name in chapters)
    formulas = sum(pages(name).page.locator("mjx-container").count() for name in chapters)
    assert figures >= len(chapters) and explorers > 0 and formulas > 0


# What a Python warning, a traceback, a logged error or a progress bar leaves in an output.
NOISE = re.compile(
    r"\b[A-Z]\w*(Warning|Error|Exception): |Traceback \(most recent call last\)|^\s*warnings\.warn\("
    r"|\(raylet\)|\[(ERROR|WARNING)\]|\w+\.cc:\d+: "  # logged errors, e.g. Ray's C++ core worker
    r"|\d+%\|[^|]*\||\d+(\.\d+)?(it|s)/(s|it)\]|\d+/\d+ \[\d+:\d+",  # tqdm bars
    re.MULTILINE,
)


@pytest.mark.parametrize("name", toc_pages())
def test_outputs_show_no_warnings_or_tracebacks(pages, name):
    outputs = pages(name).page.evaluate(
        "() => [...document.querySelectorAll('.cell_output')].map(o => o.innerText)"
    )
    noisy = [match.group(0) for text in outputs for match in [NOISE.search(text)] if match]
    # The book ships no Jupyter widget manager (the explorers are plain HTML), so a stored
    # widget output, usually a tqdm bar from a live kernel, would render as nothing: pass
    # progress=False in that cell.
    noisy += ["Jupyter widget output"] * pages(name).page.locator(WIDGET_VIEW).count()
    assert noisy == [], f"{name}: outputs show warnings, errors or progress bars: {noisy[:5]}"


@pytest.mark.parametrize("name", [n for n in toc_pages() if (ROOT / f"{n}.ipynb").exists()])
def test_notebook_pages_have_execution_footer(pages, name):
    footer = pages(name).page.locator(".execution-footer")
    assert footer.count() == 1, f"{name}: no execution footer"
    assert "Last executed" in footer.inner_text() and "torch" in footer.inner_text()


def test_navigation_reaches_every_page(pages):
    start = pages(toc_pages()[0])
    hrefs = start.page.evaluate(
        "() => [...document.querySelectorAll('.bd-sidebar-primary a.reference.internal')].map(a => a.href)"
    )
    reached = {Path(href.split("#")[0].removeprefix("file://")).resolve() for href in hrefs}
    reached.add(start.path.resolve())
    missing = [name for name in toc_pages() if (HTML / f"{name}.html").resolve() not in reached]
    assert missing == [], f"the sidebar does not link to {missing}"
