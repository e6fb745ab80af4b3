"""The book's two small Sphinx extensions in book/_ext."""

import sys
from pathlib import Path

import pytest
from sphinx.builders.html._assets import _JavaScript

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))

from execution_footer import execution_window, footer_text  # noqa: E402
from unique_scripts import _drop_duplicate_scripts  # noqa: E402


def code_cell(start: str | None, end: str | None = None) -> dict:
    timing = {} if start is None else {"iopub.execute_input": start, "shell.execute_reply": end or start}
    return {"cell_type": "code", "metadata": {"execution": timing}, "source": ""}


def test_window_spans_first_start_to_last_reply():
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# t"},
            code_cell("2026-11-29T10:00:05.5Z", "2026-11-29T10:00:07Z"),
            code_cell("2026-11-29T10:00:00Z", "2026-11-29T10:00:01Z"),
            code_cell("2026-11-29T10:02:00Z", "2026-11-29T10:02:30.25Z"),
        ]
    }
    start, end = execution_window(notebook)
    assert (end - start).total_seconds() == pytest.approx(150.25)
    assert start.hour == 10 and start.minute == 0 and start.second == 0


def test_footer_states_time_duration_and_versions():
    notebook = {"cells": [code_cell("2026-11-29T22:47:03Z", "2026-11-29T22:47:31Z")]}
    text = footer_text(notebook, {"torch": "2.13.0", "transformers": "5.24.0"})
    assert text == (
        "Last executed 2026-11-29 22:47 UTC in 28 s; "
        "the book was built with torch 2.13.0, transformers 5.24.0."
    )


def test_long_runs_are_given_in_minutes():
    notebook = {"cells": [code_cell("2026-11-29T10:00:00Z", "2026-11-29T10:09:00Z")]}
    assert "in 9.0 min;" in footer_text(notebook, {})


def test_unexecuted_notebook_has_no_footer():
    assert footer_text({"cells": [code_cell(None)]}, {"torch": "2"}) is None
    assert footer_text({"cells": []}, {"torch": "2"}) is None


def test_duplicate_inline_scripts_are_dropped_in_order():
    inline = {"body": "const X = 1"}
    context = {
        "script_files": [
            _JavaScript("a.js"),
            _JavaScript(None, **inline),
            _JavaScript("b.js", **{"async": "async"}),
            _JavaScript("", **inline),
            _JavaScript("a.js"),
            _JavaScript(None, body="const Y = 2"),
        ]
    }
    _drop_duplicate_scripts(None, "page", "page.html", context, None)
    kept = [(s.filename, s.attributes.get("body")) for s in context["script_files"]]
    assert kept == [("a.js", None), (None, "const X = 1"), ("b.js", None), (None, "const Y = 2")]
