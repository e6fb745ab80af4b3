"""The notebook output checker: tokeniser, tolerance classes, and the plugin inside nbval."""

import subprocess
import sys
from decimal import Decimal

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recutils.outputcheck import TOLERANCES, Number, compare_text, tokenize, tolerance_class


def numbers(text):
    return [(t.value, t.kind) for t in tokenize(text)[1::2]]


def test_tokenize_splits_text_and_numbers():
    assert tokenize("NDCG@10 0.1783 ± 0.0094 (n = 3 seeds)") == [
        "NDCG@", Number("10", Decimal(10), "integer"), "",
        Number("0.1783", Decimal("0.1783"), "decimal"), "±",
        Number("0.0094", Decimal("0.0094"), "decimal"), "(n =",
        Number("3", Decimal(3), "integer"), "seeds)",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[−0.0072, +0.0050]", [(Decimal("-0.0072"), "decimal"), (Decimal("0.0050"), "decimal")]),
        ("1.6e-05 and 2E+3", [(Decimal("0.000016"), "decimal"), (Decimal("2000"), "decimal")]),
        ("38% of train", [(Decimal("0.38"), "percent")]),
        ("79,619 ratings, 0.25, 0", [(79619, "integer"), (Decimal("0.25"), "decimal"), (0, "integer")]),
        ("took 5.", [(5, "integer")]),
        ("0.01-0.02, 64-d", [(Decimal("0.01"), "decimal"), (Decimal("0.02"), "decimal"), (64, "integer")]),
        ("<td>-inf</td>", [(Decimal("-inf"), "special")]),
    ],
)
def test_tokenize_reads_each_way_of_printing_a_number(text, expected):
    assert numbers(text) == expected


def test_tokenize_nan_and_inf_but_not_inside_words():
    tokens = tokenize("NaN nan inf information")
    assert [t.kind for t in tokens[1::2]] == ["special"] * 3
    assert tokens[-1] == "information"


def test_numbers_glued_to_letters_are_text():
    text = "P1 l2 chapter 5c u_emb torch 2.13.0 at 0x7f3a, 1.5x faster"
    assert tokenize(text) == [text]


def test_whitespace_collapses_but_words_do_not_merge():
    assert compare_text("mean      sd  n\n0.1338  0.0112  3", "mean sd n 0.1338 0.0112 3", "exact") == []
    assert compare_text("softmax mixture", "softmaxmixture", "exact")


@pytest.mark.parametrize(
    "tolerance, stored, new",
    [
        ("deterministic", "0.12345", "0.12346"),  # 1e-5 apart: rtol 1e-4 plus the last digit's rounding
        ("deterministic", "0.1235", "0.1236"),  # one unit in the last digit: a rounding boundary between
        ("deterministic", "loss 2.3992536067962646", "loss 2.3992612"),
        ("deterministic", "38%", "38.5%"),
        ("deterministic", "nan, -inf", "NaN, -inf"),
        ("learned", "NDCG@10 0.1783 ± 0.0094 (n = 3 seeds)", "NDCG@10 0.1746 ± 0.0101 (n = 3 seeds)"),
        ("learned", "'+0.0036 [−0.0007, +0.0077]'", "'+0.0031 [-0.0011, +0.0069]'"),
        ("exact", "100,000 ratings, 943 users", "100,000 ratings, 943 users"),
    ],
)
def test_passes_within_tolerance(tolerance, stored, new):
    assert compare_text(stored, new, tolerance) == []


@pytest.mark.parametrize("tolerance", sorted(TOLERANCES))
def test_fails_on_a_changed_verdict_in_every_class(tolerance):
    interval = "+0.0045 [-0.0001, +0.0091]"
    problems = compare_text(f"{interval} above", f"{interval} within noise", tolerance)
    assert problems == ["text '] above' → '] within noise' (text must match exactly)"]


def test_a_changed_chosen_setting_fails():
    assert compare_text("validation chose softmax mixture", "validation chose CombSUM", "learned") == [
        "text 'validation chose softmax mixture' → 'validation chose CombSUM' (text must match exactly)"
    ]


@pytest.mark.parametrize(
    "tolerance, stored, new, message",
    [
        ("exact", "0.1783", "0.17830001", "number 0.1783 → 0.17830001 (exact: numbers must match as"),
        ("deterministic", "0.1235", "0.1237", "number 0.1235 → 0.1237 differs by 0.0002 (0.2%); determini"),
        ("deterministic", "2.5e-04", "2.7e-04", "number 2.5e-04 → 2.7e-04 differs by 2e-05 (8.0%)"),
        ("learned", "0.1783", "0.2000", "number 0.1783 → 0.2000 differs by 0.0217 (12.2%); learned allows"),
        ("learned", "+0.0050", "−0.0072", "number +0.0050 → −0.0072 differs by 0.0122"),
    ],
)
def test_fails_on_a_number_outside_its_class(tolerance, stored, new, message):
    (problem,) = compare_text(stored, new, tolerance)
    assert problem.startswith(message)


@pytest.mark.parametrize("tolerance", sorted(TOLERANCES))
def test_counts_and_settings_must_match_in_every_class(tolerance):
    (problem,) = compare_text("943 users, k = 1600", "944 users, k = 1600", tolerance)
    assert "943 → 944" in problem
    assert compare_text("k = 1600", "k = 1650", tolerance)


@pytest.mark.parametrize(
    "stored, new",
    [("15", "15.0"), ("38%", "0.38"), ("nan", "0.1"), ("inf", "-inf"), ("0.1 0.2", "0.1"), ("0.1", "0.1 0")],
)
def test_fails_when_the_kind_or_count_of_numbers_changes(stored, new):
    assert compare_text(stored, new, "learned")


def test_tolerance_class_from_tags():
    assert tolerance_class([]) == "deterministic"
    assert tolerance_class(["nbval-check-output", "tolerance-learned"]) == "learned"
    assert tolerance_class(["tolerance-exact"]) == "exact"
    with pytest.raises(ValueError, match="tolerance-learnt"):
        tolerance_class(["tolerance-learnt"])
    with pytest.raises(ValueError, match="at most one"):
        tolerance_class(["tolerance-exact", "tolerance-learned"])


@given(st.text())
def test_any_output_matches_itself(text):
    for tolerance in TOLERANCES:
        assert compare_text(text, text, tolerance) == []


@given(
    st.floats(1e-3, 1e3),
    st.floats(-0.9e-4, 0.9e-4),
    st.integers(1, 8),
)
def test_drift_within_rtol_never_fails_however_rounded(x, drift, decimals):
    assert compare_text(f"{x:.{decimals}f}", f"{x * (1 + drift):.{decimals}f}", "deterministic") == []


def _notebook(path, cells):
    """A notebook of checked cells: (source, extra tags, stored outputs)."""
    nb = nbformat.v4.new_notebook()
    for source, tags, outputs in cells:
        cell = nbformat.v4.new_code_cell(source, execution_count=1, outputs=outputs)
        cell.metadata["tags"] = ["nbval-check-output", *tags]
        nb.cells.append(cell)
    nbformat.write(nb, path)


def _run_nbval(cwd, *notebooks):
    command = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-p", "recutils.outputcheck",
               "--nbval-lax", "--nbval-current-env", *notebooks]  # fmt: skip
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180)


def test_plugin_checks_notebooks_with_tolerance_inside_nbval(tmp_path):
    glue_type = "application/papermill.record/text/plain"  # what myst-nb's glue displays
    printed = 'print(f"NDCG@10 {0.1783:.4f}: above EASE, n = 943")'
    glued = (
        "from IPython.display import display\n"
        f'display({{"{glue_type}": "0.178312 within noise"}}, raw=True)'
    )

    def cells(printed_out, glued_out):
        stream = nbformat.v4.new_output("stream", name="stdout", text=printed_out)
        record = nbformat.v4.new_output("display_data", data={glue_type: glued_out})
        return [(printed, ["tolerance-learned"], [stream]), (glued, [], [record])]

    # Stored outputs as another CPU might have made them (within tolerance), and ones that moved too far.
    near = cells("NDCG@10 0.1801: above EASE, n = 943\n", "0.178320 within noise")
    far = cells("NDCG@10 0.2500: above EASE, n = 943\n", "0.178312 above")
    _notebook(tmp_path / "near.ipynb", near)
    _notebook(tmp_path / "far.ipynb", far)
    result = _run_nbval(tmp_path, "near.ipynb", "far.ipynb")
    report = result.stdout
    assert "PASSED near.ipynb::Cell 0" in report and "PASSED near.ipynb::Cell 1" in report, report
    assert "FAILED far.ipynb::Cell 0" in report and "FAILED far.ipynb::Cell 1" in report, report
    assert "far.ipynb Cell 0, learned tolerance" in report
    assert "stdout #1: number 0.2500 → 0.1783 differs by 0.0717 (28.7%); learned allows" in report
    assert "far.ipynb Cell 1, deterministic tolerance" in report
    assert f"{glue_type} #1: text 'above' → 'within noise' (text must match exactly)" in report
    assert result.returncode == 1


def test_plugin_stops_on_an_unknown_tolerance_tag(tmp_path):
    _notebook(tmp_path / "typo.ipynb", [("print(1)", ["tolerance-learnt"], [])])
    result = _run_nbval(tmp_path, "typo.ipynb")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "typo.ipynb::Cell 0: cell tags ['tolerance-learnt'] do not choose one tolerance" in result.stderr
