"""The built HTML book as a reader sees it, opened from disk in headless Chromium.

Runs after `make html` (`make test` orders it so). With no network, every page must load
with no failed or remote requests, show rendered maths, load its figures and render its
explorers, and no output may show a Python warning, traceback or progress bar; its Chinese
must render in the font the book serves; the navigation must reach every chapter. A
screenshot of each page is saved under `_build/screenshots`. test_explorers.py moves the
explorers' controls.

Without Chromium the tests are skipped with a message saying so; CI sets
`RECUTILS_REQUIRE_BROWSER=1`, which turns that skip into a failure.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from fontTools.ttLib import TTFont

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
        self.page.evaluate("() => document.fonts.ready.then(() => null)")


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


# The article's Chinese (and any CJK in outputs) must render on a machine without a CJK font,
# where anything but the font the book serves shows as boxes (`make vendor` cuts Noto Sans SC
# to the sources' characters, book/_ext/cjk_font.py). Two facts make that sure: Chromium draws
# every CJK character with the served font (CSS.getPlatformFontsForNode names the fonts that
# drew each text node), and the served font has a glyph for each (its cmap; a character it
# lacks is still "drawn" by it, as its empty .notdef glyph).
CJK_FONT = "Noto Sans SC"
CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
CJK_TEXT_NODES = f"""(() => {{
  const cjk = /{CJK.pattern}/u, walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) {{
    const node = walker.currentNode;
    if (cjk.test(node.nodeValue) && node.parentElement.checkVisibility()) nodes.push(node);
  }}
  return nodes;
}})()"""


@functools.cache
def served_cjk_characters() -> frozenset[str]:
    """The characters the served font has glyphs for, read from its stylesheet's data: URL."""
    css = HTML / "_static" / "cjk-font.css"
    assert css.exists(), f"{css} was not built: `make vendor` writes it to _vendor/"
    woff = re.search(r'url\("data:font/woff;base64,([^"]+)"\)', css.read_text())
    assert woff, f"{css} has no inlined WOFF font"
    return frozenset(map(chr, TTFont(io.BytesIO(base64.b64decode(woff.group(1)))).getBestCmap()))


def cjk_not_rendered(page) -> tuple[int, list[str]]:
    """How many CJK characters the page shows, and each text whose CJK will not render."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    cdp.send("DOM.getDocument", {"depth": 0})
    nodes = cdp.send("Runtime.evaluate", {"expression": CJK_TEXT_NODES})["result"]["objectId"]
    shown, wrong = 0, []
    for item in cdp.send("Runtime.getProperties", {"objectId": nodes, "ownProperties": True})["result"]:
        if not item["name"].isdigit():
            continue
        node = cdp.send("DOM.requestNode", {"objectId": item["value"]["objectId"]})["nodeId"]
        text = cdp.send("DOM.describeNode", {"nodeId": node})["node"]["nodeValue"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        characters = CJK.findall(text)
        shown += len(characters)
        served = sum(f["glyphCount"] for f in fonts if f["isCustomFont"] and f["familyName"] == CJK_FONT)
        where = repr(text.strip()[:40])
        if served != len(characters):
            drawn = {f["familyName"]: f["glyphCount"] for f in fonts}
            wrong.append(f"{where}: {served} of {len(characters)} CJK characters in {CJK_FONT} ({drawn})")
        if missing := "".join(sorted(set(characters) - served_cjk_characters())):
            wrong.append(f"{where}: the served font has no glyph for {missing}")
    cdp.detach()
    return shown, wrong


@pytest.mark.parametrize("name", toc_pages())
def test_cjk_text_renders_in_the_served_font(pages, name):
    shown, wrong = cjk_not_rendered(pages(name).page)
    assert wrong == [], (
        f"{name}: CJK text that shows as boxes on machines without a CJK font (`make vendor` "
        f"cuts the served font to the characters of book/*.md, *.ipynb and *.bib): {wrong[:5]}"
    )


def test_cjk_check_sees_the_article_and_fails_without_the_font(pages, browser):
    """The check above is not vacuous: the glossary and chapter 4 quote the article in Chinese
    (screenshots in _build/screenshots/chinese-*.png), and the check fails on the glossary
    with the font's stylesheet blocked, or with a character the served font lacks."""
    quotes = [("book/glossary", "dl.glossary", 100), ("book/04_two_tower", "p:has-text('优化算法')", 10)]
    for name, quote, least in quotes:
        page = pages(name).page
        assert cjk_not_rendered(page)[0] >= least, f"{name}: expected at least {least} CJK characters"
        block = page.locator(quote).first
        block.scroll_into_view_if_needed()
        box = block.bounding_box()
        clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16}
        clip["height"] = min(box["height"] + 16, page.viewport_size["height"] - clip["y"], 600)
        page.screenshot(path=str(SCREENSHOTS / f"chinese-{Path(name).name}.png"), clip=clip)

    glossary = (HTML / "book" / "glossary.html").as_uri()
    blocked = browser.new_page()
    blocked.route("**/cjk-font.css*", lambda route: route.abort())
    blocked.goto(glossary, wait_until="load")
    blocked.evaluate("() => document.fonts.ready.then(() => null)")
    shown, wrong = cjk_not_rendered(blocked)
    blocked.close()
    assert shown >= 100 and len(wrong) >= 10, f"with the font blocked, only {len(wrong)} texts fail: {wrong}"

    absent = next(c for c in "鼎龘鑫" if c not in served_cjk_characters())
    added = browser.new_page()
    added.goto(glossary, wait_until="load")
    added.evaluate(f"() => document.querySelector('dl.glossary dd p').append('{absent}')")
    added.evaluate("() => document.fonts.ready.then(() => null)")
    wrong = cjk_not_rendered(added)[1]
    added.close()
    assert any(w.endswith(f"no glyph for {absent}") for w in wrong), f"a missing {absent} passes: {wrong}"
