"""Sphinx extension: each script tag once per page.

sphinx-thebe registers its inline `const THEBE_JS_URL = ...` script every time Sphinx
reads the sources, and a jupyter-book build reads them twice, so every page declared the
constant twice and the browser threw a SyntaxError (sphinx-togglebutton's inline script
repeats the same way). The second copy has filename '' where the first has None, so
scripts are compared by filename-or-empty and attributes (the inline body is one of
them); the first of each is kept in its place.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    # Late, after the other extensions have added their page scripts.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
