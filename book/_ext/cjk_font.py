"""Cut the book's Chinese font to the characters the book uses, and write its stylesheet.

Not a Sphinx extension: `make vendor` runs it after fetching Noto Sans SC from npm.
Usage: cjk_font.py FONT.ttf OUT.css SOURCE...

Machines without a CJK font (a minimal Debian with Chromium) would show the article's
Chinese as empty boxes, so the book serves its own. The whole font is 10 MB; the subset,
every CJK character in the sources (markdown, notebooks with their outputs, the
bibliography) and the CJK punctuation, is a few tens of kB. It is inlined into the
stylesheet as a data: URL, so it loads from disk in any browser (file:// fonts meet
cross-origin rules in some). Its unicode-range keeps Latin text in the theme's fonts.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

FAMILY = "Book CJK"
# Hiragana and katakana, CJK ideographs (with extension A and compatibility ideographs),
# CJK punctuation, and the full-width forms ("：", "，").
RANGES = [(0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF)]
CJK = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in RANGES) + "]")
PUNCTUATION = "，。、；：？！（）《》〈〉【】「」『』～"


def strings(value):
    """Every string in a parsed notebook: sources, outputs, metadata."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def characters(sources: list[Path]) -> set[str]:
    found = set(PUNCTUATION)
    for source in sources:
        text = source.read_text(encoding="utf-8")
        if source.suffix == ".ipynb":
            text = "\n".join(strings(json.loads(text)))
        found.update(CJK.findall(text))
    return found


def main(font_path: str, css_path: str, *sources: str) -> None:
    wanted = characters([Path(source) for source in sources])
    font = TTFont(font_path)
    missing = sorted(c for c in wanted if ord(c) not in font.getBestCmap())
    if missing:
        sys.exit(f"{font_path} has no glyph for {''.join(missing)}: choose a font that does")
    options = subset.Options()
    options.flavor = "woff"  # zlib; woff2 would need brotli
    options.name_IDs = ["*"]  # keep the licence (OFL-1.1) in the font's name table
    options.notdef_outline = True  # a character it lacks shows as a box, not as nothing
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in wanted])
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.flavor = "woff"
    font.save(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    unicode_range = ", ".join(f"U+{a:04X}-{b:04X}" for a, b in RANGES)
    Path(css_path).write_text(
        f"/* {font['name'].getDebugName(4)} (SIL Open Font License 1.1), cut to the book's "
        f"{len(wanted)} CJK characters by book/_ext/cjk_font.py. */\n"
        f'@font-face {{ font-family: "{FAMILY}"; font-display: block; unicode-range: {unicode_range};\n'
        f'  src: url("data:font/woff;base64,{data}") format("woff"); }}\n'
        "/* First in every stack: the unicode-range gives it only CJK text, so Latin keeps the\n"
        "   theme's fonts, and a reader's own CJK font cannot hide a character missing here. */\n"
        f':root {{ --pst-font-family-base: "{FAMILY}", var(--pst-font-family-base-system);\n'
        f'  --pst-font-family-heading: "{FAMILY}", var(--pst-font-family-base-system);\n'
        f'  --pst-font-family-monospace: "{FAMILY}", var(--pst-font-family-monospace-system); }}\n',
        encoding="utf-8",
    )
    print(f"{css_path}: {len(wanted)} characters, {len(buffer.getvalue()) // 1024} kB of font")


if __name__ == "__main__":
    main(*sys.argv[1:])
