"""Sphinx extension: a footer line on every notebook page, generated at build.

It says when the stored notebook was last executed and how long that took (read from
the per-cell timing that `jupyter execute` records), and which torch and transformers
the book was built with. A notebook with no execution record fails a `-W` build.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers")


def execution_window(notebook: dict) -> tuple[datetime, datetime] | None:
    """When the notebook's first code cell started and its last one finished.

    Returns None when no code cell carries `jupyter execute`'s timing metadata.
    """
    starts, ends = [], []
    for cell in notebook.get("cells", []):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.get("cell_type") == "code" and "iopub.execute_input" in timing:
            starts.append(_parse(timing["iopub.execute_input"]))
            ends.append(_parse(timing.get("shell.execute_reply", timing["iopub.execute_input"])))
    if not starts:
        return None
    return min(starts), max(ends)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def footer_text(notebook: dict, versions: dict[str, str]) -> str | None:
    """The footer sentence for one notebook, or None if it was never executed."""
    window = execution_window(notebook)
    if window is None:
        return None
    start, end = window
    seconds = (end - start).total_seconds()
    built_with = ", ".join(f"{name} {number}" for name, number in versions.items())
    return (
        f"Last executed {start:%Y-%m-%d %H:%M} UTC in {_duration(seconds)}; "
        f"the book was built with {built_with}."
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package ("not installed" when absent)."""
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _add_footer(app: Sphinx, doctree: nodes.document) -> None:
    source = Path(app.env.doc2path(app.env.docname))
    if source.suffix != ".ipynb":
        return
    text = footer_text(json.loads(source.read_text(encoding="utf-8")), installed_versions())
    if text is None:
        logger.warning(f"{source} has no execution record; run `make book` to execute it")
        return
    doctree.append(nodes.paragraph(text, text, classes=["execution-footer"]))


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", _add_footer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
