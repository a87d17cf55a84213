"""Final-answer extraction and checking for teacher completions.

Teacher output is untrusted data: it is only ever matched with linear-time regexes and parsed
by hand or by math_verify behind size/shape guards. Nothing here evaluates it, raises on it, or
can be made to hang by it (a 1 MB line, 10k nested braces, an exponent tower).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from fractions import Fraction

__all__ = ["extract_answer", "has_answer_line", "is_correct", "normalize_numeric"]

AnswerType = str  # "numeric" | "choice" | "exact"

# "Answer: x", "Final answer: x", "**Answer:** x", "The (final) answer is x". The pattern ends
# in optional parts only, so a failed match never backtracks over long inputs.
_ANSWER = re.compile(
    r"(?:\bthe[ \t]+(?:final[ \t]+)?answer[ \t]+is\b|\banswer\b[ \t*]*[:：])[ \t*:：]*",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE = re.compile(r"[{}]")
# No two adjacent quantifiers can share characters: a long whitespace run must not backtrack.
_LETTER = re.compile(
    r"^(?:(?:option|choice|answer)\b[\s:]*)?(?:[(\[]\s*)?([a-z])\s*[)\]]?(?:[.:)]|\s|$)",
    re.IGNORECASE,
)
# Longest inputs the numeric parser and math_verify will look at; answers are short.
_MAX_NUMERIC = 5000
_MAX_SYMBOLIC = 200

log = logging.getLogger(__name__)


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the balanced {...} opening at text[start], and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for m in _BRACE.finditer(text, start):  # jumps brace to brace: no per-char Python loop
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return text[start + 1 : m.start()], m.end()
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last well-formed \\boxed{...} (nested braces ok), or \\boxed x."""
    # Scan from the end; an unbalanced last \boxed falls back to an earlier one. Each try is
    # linear, and the number of tries is capped so the whole thing stays O(len(text)).
    end = len(text)
    for _ in range(4):
        m = None
        while end > 0:
            pos = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
            if pos < 0:
                break
            end = pos
            m = _BOXED.match(text, pos)
            if m is not None:
                break
        if m is None:
            return None
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        got = _braced(text, j)
        if got is not None:
            return got[0].strip()
        if j < len(text) and j > m.end():  # "\boxed 7"
            token = text[j:].split(maxsplit=1)
            if token:
                return token[0].rstrip("$.")
    return None


def _clean(ans: str) -> str:
    """Strip markdown/latex wrapping around an answer line's content."""
    ans = ans.strip().rstrip(".").strip()
    boxed = _last_boxed(ans) if "\\" in ans else None
    if boxed is not None:
        return boxed
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$"), ("**", "**")):
        if ans.startswith(left) and ans.endswith(right) and len(ans) >= len(left) + len(right):
            ans = ans[len(left) : len(ans) - len(right)].strip()
    return ans.strip("* \t").rstrip(".").strip()


@functools.lru_cache(maxsize=8)  # grading, the format check and the answer read one text
def _answer_line(text: str) -> str | None:
    last = None
    for last in _ANSWER.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None:
        return None
    eol = text.find("\n", last.end())
    if (
        last.group(0).lower().startswith("the")
        and eol >= 0
        and (text.find("\\boxed", eol) >= 0 or text.find("\\fbox", eol) >= 0)
    ):
        # Prose "the answer is ..." with a \boxed on a later line: the boxed value is final.
        return None
    rest = text[last.end() :]
    line, _, after = rest.partition("\n")
    if not line.strip():
        # "Final Answer:\n\\[\n\\boxed{7}\n\\]": look a few lines down for the value.
        window = after[:2000]
        boxed = _last_boxed(window) if "\\box" in window or "\\fbox" in window else None
        if boxed is not None:
            return boxed
        line = next((ln for ln in window.split("\n") if ln.strip()), "")
    elif last.group(0).lower().startswith("the"):
        # "The answer is 42. Because ..." ends at the sentence.
        line = re.split(r"(?<=[^\d\s])\.\s|\.\s+(?=[A-Z])", line, maxsplit=1)[0]
    cleaned = _clean(line)
    return cleaned or None


def extract_answer(text: str) -> str | None:
    """The final answer: the last "Answer: ..." style line, else the last \\boxed{...}.

    One rule for every answer type; checking against gold (is_correct) is type-aware."""
    if not isinstance(text, str) or not text:
        return None
    ans = _answer_line(text)
    if ans is None and "\\" in text:
        ans = _last_boxed(text)
    return ans or None


def has_answer_line(text: str) -> bool:
    """Format check: the completion states its answer on an "Answer: ..." style line."""
    return isinstance(text, str) and _answer_line(text) is not None


# --- numeric ---------------------------------------------------------------------------------

_NUM = re.compile(
    r"""^(?P<sign>[-+])?\s*\$?\s*
    (?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?:\.(?P<frac>\d+))?
    (?:[eE](?P<exp>[-+]?\d{1,4}))?
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?
    (?P<rest>.*)$""",
    re.VERBOSE | re.DOTALL,
)
_FRAC = re.compile(r"^([-+])?\\[dt]?frac\s*(?:\{([^{}]*)\}|(\d))\s*(?:\{([^{}]*)\}|(\d))(.*)$")
_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\left|\\right|\\?\$|\^\s*\{?\\circ\}?|\\%|\{,\}")


def _strip_wrappers(s: str) -> str:
    s = s.strip().replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ")
    boxed = _last_boxed(s) if "\\box" in s or "\\fbox" in s else None
    if boxed is not None:
        s = boxed
    s = _WRAP.sub(r"\1", s)
    s = s.replace("{,}", ",")
    s = _LATEX_NOISE.sub("", s).strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("(", ")"), ("{", "}")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
    # "x = 5" / "n=5": the value is after the last "=" (not for "<=", ">=").
    if "=" in s:
        head, _, tail = s.rpartition("=")
        if tail.strip() and not head.endswith(("<", ">", "!")):
            s = tail.strip()
    return s


def _parse_fraction(s: str) -> Fraction | str | None:
    """A Fraction for ordinary numbers; a canonical string for decimals too long for int()."""
    m = _NUM.match(s)
    if m is None or (m.group("int") is None and m.group("frac") is None):
        return None
    rest = m.group("rest").strip()
    rest = re.sub(r"(?<=[a-zA-Z])\^\s*\{?\d+\}?", "", rest)  # "cm^2": a unit, not a number
    if any(ch.isdigit() for ch in rest) or rest.startswith(("/", "*", "^", "+", "-")):
        return None  # "3 or 4", "2*3": not one number
    sign = -1 if m.group("sign") == "-" else 1
    whole = (m.group("int") or "0").replace(",", "")
    frac = m.group("frac") or ""
    exp = int(m.group("exp") or 0)
    if abs(exp) > 1000:
        return None
    den = m.group("den")
    if len(whole) + len(frac) > 4000:
        # Past int()'s digit limit: compare canonical decimal strings instead.
        if exp or den:
            return None
        digits = whole.lstrip("0") or "0"
        tail = frac.rstrip("0")
        body = digits + ("." + tail if tail else "")
        return ("-" if sign < 0 and body != "0" else "") + body
    value = Fraction(int(whole + frac), 10 ** len(frac)) * Fraction(10) ** exp
    if den is not None:
        d = Fraction(den)
        if d == 0:
            return None
        value /= d
    return sign * value


def normalize_numeric(s: str | None) -> str | None:
    """Canonical form of a single number ("1000", "-1/2"), or None if s is not one.

    Accepts thousands separators, decimals, a/b, \\frac{a}{b}, scientific notation, a unicode
    minus, $ and %, \\boxed{}, \\text{}, "x = 5", and trailing units/words ("7 apples.").
    """
    if not isinstance(s, str) or not s.strip() or len(s) > _MAX_NUMERIC:
        return None
    try:
        return _normalize_numeric(s)
    except (ValueError, ArithmeticError):  # e.g. int<->str digit limits
        return None


def _normalize_numeric(s: str) -> str | None:
    s = _strip_wrappers(s)
    fm = _FRAC.match(s)
    if fm is not None:
        sign, n1, n2, d1, d2, rest = fm.groups()
        num = _parse_fraction(n1 if n1 is not None else n2)
        den = _parse_fraction(d1 if d1 is not None else d2)
        if rest.strip(" .%") or not isinstance(num, Fraction) or not isinstance(den, Fraction):
            return None
        if den == 0:
            return None
        value: Fraction | str | None = (-1 if sign == "-" else 1) * num / den
    else:
        value = _parse_fraction(s)
    if value is None or isinstance(value, str):
        return value
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


# --- math_verify fallback --------------------------------------------------------------------

# Exponent towers, factorials and binomials can make sympy compute for hours (and a C-level
# bignum pow is not interruptible by math_verify's SIGALRM), so only simple shapes go in.
_SAFE_POW = re.compile(r"\^\s*(?:\{\s*[-+]?[\w.\\]{1,3}\s*\}|[-+]?\w)")
_UNSAFE = ("!", "**", "binom", "choose", "\\over", "sum", "prod", "int", "lim", "amma", "mod")


def _symbolic_safe(s: str) -> bool:
    if len(s) > _MAX_SYMBOLIC or any(tok in s for tok in _UNSAFE):
        return False
    if s.count("{") > 20:
        return False
    # At most one power, with a short exponent: 9^9^9 would be computed exactly.
    carets = s.count("^")
    return carets == 0 or (carets == 1 and len(_SAFE_POW.findall(s)) == 1)


def _math_verify_equal(pred: str, gold: str) -> bool:
    """math_verify's verdict, or False on anything unusual. Never raises."""
    if not (_symbolic_safe(pred) and _symbolic_safe(gold)):
        return False
    try:
        from math_verify import verify

        g, p = _mv_parse(_as_latex(gold)), _mv_parse(_as_latex(pred))
        if not g or not p:
            return False
        return bool(verify(list(g), list(p), timeout_seconds=_mv_timeout()))
    except Exception as exc:  # a checker must not crash the filter stage
        log.debug("math_verify failed on %r vs %r: %s", pred, gold, exc)
        return False


def _mv_timeout() -> int | None:
    # math_verify's timeouts use SIGALRM, which only works on the main thread.
    return 3 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)  # golds repeat for every sample of a question; sympy is slow
def _mv_parse(s: str) -> tuple:
    from math_verify import parse

    return tuple(parse(s, parsing_timeout=_mv_timeout()))


def _as_latex(s: str) -> str:
    s = s.strip()
    return s if s.startswith(("$", "\\(", "\\[")) or "\\boxed" in s else f"${s}$"


# --- choice / exact ----------------------------------------------------------------------------


def _norm_words(s: str) -> str:
    return " ".join(s.lower().split()).rstrip(".").strip()


def choice_index(s: str, choices: list[str] | None) -> int | None:
    s = _clean(_strip_latex_text(s))
    if not s:
        return None
    if choices:
        norm = _norm_words(s)
        for i, c in enumerate(choices):
            if norm == _norm_words(c):
                return i
    m = _LETTER.match(s)
    if m is None:
        return None
    idx = ord(m.group(1).lower()) - ord("a")
    if choices and idx >= len(choices):
        return None
    rest = s[m.end() :].strip()
    if rest and not m.group(0).rstrip().endswith((".", ":", ")", "]")) and len(rest.split()) > 3:
        return None  # "A cat sat on the mat": a sentence starting with "A", not a letter
    return idx


def _strip_latex_text(s: str) -> str:
    s = s.strip()
    boxed = _last_boxed(s) if "\\box" in s else None
    return _WRAP.sub(r"\1", boxed if boxed is not None else s)


def is_correct(
    pred: str | None, gold: str, answer_type: AnswerType, choices: list[str] | None = None
) -> bool:
    """Whether the predicted final answer matches gold. Never raises on bad teacher output (an
    unknown answer_type is a config error and does raise)."""
    if answer_type not in ("numeric", "choice", "exact"):
        raise ValueError(f"unknown answer_type {answer_type!r}")
    try:
        if not isinstance(pred, str) or not isinstance(gold, str) or not pred.strip():
            return False
        if answer_type == "numeric":
            p, g = normalize_numeric(pred), normalize_numeric(gold)
            if p is not None and g is not None:
                return p == g
            # Non-plain numbers (\sqrt{2}, \pi/2): ask math_verify, guarded.
            return _math_verify_equal(_strip_wrappers(pred), _strip_wrappers(gold))
        if answer_type == "choice":
            p_idx, g_idx = choice_index(pred, choices), choice_index(gold, choices)
            return p_idx is not None and p_idx == g_idx
        p_txt = _norm_words(_strip_latex_text(pred))
        return bool(p_txt) and p_txt == _norm_words(_strip_latex_text(gold))
    except Exception:  # bad teacher output is a wrong answer, not a crash
        return False


def grade(
    text: str, gold: str, answer_type: AnswerType, choices: list[str] | None = None
) -> tuple[str | None, bool]:
    """(the final answer read from `text`, whether it matches `gold`): the one answer check
    that filter's `correct` and eval's scoring both make."""
    pred = extract_answer(text)
    return pred, pred is not None and is_correct(pred, str(gold), answer_type, choices or None)
