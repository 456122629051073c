"""Answer extraction (per model family) and normalisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mathsolve.scoring.answer import extract_answer, find_last_boxed, strip_string

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# find_last_boxed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\fbox{7}", "7"),
        (r"\boxed{1} and \fbox{8}", "8"),
        (r"The answer is $\boxed 5$.", "5"),
        (r"\boxed {12}", "12"),
        ("no box here", None),
        (r"cut off \boxed{\frac{1}{2", None),
    ],
)
def test_find_last_boxed(text: str, expected: str | None) -> None:
    assert find_last_boxed(text) == expected


# ---------------------------------------------------------------------------
# extract_answer, style "tora"
# ---------------------------------------------------------------------------

TORA_SOLUTION = (
    "```python\nprint(16 - 3 - 4)\n```\n```output\n9\n```\n"
    "Janet makes $\\boxed{18}$ dollars every day."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TORA_SOLUTION, "18"),
        # Boxed beats everything, nested braces matched, then normalised.
        (r"The answer is 3. So $\boxed{\dfrac{1}{2}}$", r"\frac{1}{2}"),
        (r"$\boxed{18 \text{ dollars}}$", "18"),
        (r"$\boxed{\$1,200}$", "1,200"),
        (r"$\boxed{50\%}$", "50"),
        (r"$\boxed{5.0}$", "5"),
        # "he answer is": first line, leading ':' and trailing '.' dropped.
        ("Thus the answer is: 42.\nMore text 7", "42"),
        ("The answer is 3/4.", r"\frac{3}{4}"),
        # Last output block when there is no boxed answer and no "answer is".
        ("```python\nprint(2)\n```\n```output\n2.0\n```\nTwo people accept.", "2"),
        # Last number, commas removed first (reference behaviour).
        ("It costs 1,234 dollars in total", "1234"),
        ("We get -0.5 overall", "-0.5"),
        ("nothing numeric", ""),
        ("", ""),
        # Trailing "/" is dropped (reference quirk for "x/" style cuts).
        ("the answer is 12/", "12"),
    ],
)
def test_extract_tora(text: str, expected: str) -> None:
    assert extract_answer(text, "tora") == expected


def test_extract_tora_bare_boxed_word_quirk() -> None:
    # ToRA splits on the bare word "boxed": prose such as "a lego boxed set" is read
    # as the answer, up to the next "$" (then spaces go). Kept because the published
    # scores were computed this way.
    assert extract_answer("He bought a lego boxed set for $20.", "tora") == "setfor"


def test_extract_tora_unclosed_box_keeps_the_rest() -> None:
    assert extract_answer(r"\boxed{12", "tora") == "12"


def test_default_style_is_tora() -> None:
    assert extract_answer(TORA_SOLUTION) == "18"


# ---------------------------------------------------------------------------
# extract_answer, styles "boxed" and "dart"
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"<|text|>So $\boxed{\frac{3}{4}}$.<|endofblock|>", r"\frac{3}{4}"),
        (r"first \boxed{1}, finally \boxed{x^2}", "x^2"),
        ("The answer is 5.", ""),  # only a boxed answer counts for MathCoder
        ("He bought a lego boxed set", ""),
    ],
)
def test_extract_boxed(text: str, expected: str) -> None:
    assert extract_answer(text, "boxed") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 3 + 4 = 7.\nTherefore, the answer is $7$.", "7"),
        (r"We compute 2+2. Therefore, $x = \boxed{4}$.", "4"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("Some work, 12 cases.\n\n# Answer\n\n15", "15"),
        (r"Hence we get $\frac{1}{2}$ in the end", r"\frac{1}{2}"),
        ("In total she has 18 apples", "18"),
        # Narrowing to the text after "Therefore" happens first (DART-Math's order).
        (r"The value is \boxed{3}. Therefore 5 is wrong", "5"),
        ("no answer", ""),
    ],
)
def test_extract_dart(text: str, expected: str) -> None:
    assert extract_answer(text, "dart") == expected


def test_unknown_style_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown extraction style"):
        extract_answer("x", "qwen")


# ---------------------------------------------------------------------------
# strip_string
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  5. ", "5"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        (r"\tfrac12", r"\frac{1}{2}"),
        (r"\frac43", r"\frac{4}{3}"),
        (r"\frac 59", r"\frac{5}{9}"),
        (r"\frac9{19}", r"\frac{9}{19}"),
        (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
        (r"11\sqrt2", r"11\sqrt{2}"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        (r"\$32,\!348", "32,348"),
        (r"\$23{,}000", "23000"),
        (r"5\%", "5"),
        ("50%", "50"),
        (r"5.4 \text{ cents}", "5.4"),
        (r"15\mbox{ cm}^2", "15"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\text{(C)}", "(C)"),
        (".35625", "0.35625"),
        ("18.0", "18"),
        ("3.00", "3"),
        ("1.50", "1.50"),
        ("x=5", "5"),
        ("y = 2x + 3", "2x+3"),
        (r"x \in [-2,7]", "[-2,7]"),
        ("3/4", r"\frac{3}{4}"),
        ("-3/4", r"\frac{-3}{4}"),
        ("1+2j", "1+2i"),
        ("infinity", r"\infty"),
        ("1 and 2", "1,2"),
        (r"2 \cdot 3", "2*3"),
        # Matrix row breaks survive while doubled escapes before commands are fixed.
        (r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}", r"\begin{pmatrix}-1/3\\2/3\end{pmatrix}"),
        (r"\\frac{1}{2}", r"\frac{1}{2}"),
        ("", ""),
    ],
)
def test_strip_string(raw: str, expected: str) -> None:
    assert strip_string(raw) == expected


@pytest.mark.parametrize("raw", ["5", r"\frac{1}{2}", r"(3,\frac{\pi}{2})", r"\begin{pmatrix}1\\2\end{pmatrix}", "x^2+1"])
def test_strip_string_is_idempotent_on_normal_forms(raw: str) -> None:
    assert strip_string(strip_string(raw)) == strip_string(raw)


def test_answer_module_does_not_import_sympy() -> None:
    # Extraction runs on every record; importing sympy would cost a second per process.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import mathsolve.scoring.answer, mathsolve.scoring.equivalence, mathsolve.scoring.grader, "
        "mathsolve.scoring.ground_truth, mathsolve.scoring.records, mathsolve.scoring.regrade, "
        "mathsolve.scoring.vote; "
        "print('sympy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
