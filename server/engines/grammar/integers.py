"""Integer ranges as grammar: the decimal numbers from ``minimum`` to ``maximum``, digit by digit.

A range becomes alternatives over the digits, as a regular expression for a range is written: 15 to 300
is ``1 [5-9] | [2-9] [0-9] | [1-2] [0-9] [0-9] | 300``. A model can then write only numbers in the range,
whichever bounds the schema gives (negative, open on either side, far apart), without the grammar
enumerating the values. Numbers are written as JSON writes them: no leading zeros, no ``+``, no ``-0``.
"""

from __future__ import annotations

from server.engines.grammar.gbnf import MAX_DIGITS, alternatives, literal


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression for the integers from ``low`` to ``high`` (``None``: unbounded on that side).

    An unbounded side stops at ``MAX_DIGITS`` digits, as the plain integer rule does.
    """
    if low is not None and high is not None and low > high:
        raise ValueError(f"no integer is at least {low} and at most {high}")
    options: list[str] = []
    if low is None or low < 0:
        # the negative numbers: a minus sign and a magnitude from |high| (or 1) to |low|
        smallest = 1 if high is None or high >= 0 else -high
        options.append('"-" ' + alternatives(_naturals(smallest, None if low is None else -low)))
    if high is None or high >= 0:
        options.extend(_naturals(0 if low is None else max(low, 0), high))
    return alternatives(options)


def _naturals(low: int, high: int | None) -> list[str]:
    """Alternatives for the numbers from ``low`` to ``high`` (``None``: up to ``MAX_DIGITS`` digits)."""
    longest = len(str(high)) if high is not None else max(MAX_DIGITS, len(str(low)))
    options: list[str] = []
    whole: list[int] = []  # the lengths taken whole: [1-9] [0-9]{a,b}
    for digits in range(len(str(low)), longest + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = 10**digits - 1 if high is None else min(high, 10**digits - 1)
        if digits == 1 and first == 0:
            options.append("[0]")
            first = 1
            if last == 0:
                continue
        if first == 10 ** (digits - 1) and last == 10**digits - 1:
            whole.append(digits)
            continue
        options.extend(_same_length(str(first), str(last)))
    if whole:
        options.append(_any_of_length(whole[0], whole[-1]))
    return options


def _any_of_length(shortest: int, longest: int) -> str:
    """Every number of ``shortest`` to ``longest`` digits."""
    if longest == 1:
        return "[1-9]"
    if shortest == longest:
        return f"[1-9] {_digits(shortest - 1)}"
    return f"[1-9] [0-9]{{{shortest - 1},{longest - 1}}}"


def _digits(count: int) -> str:
    return "[0-9]" if count == 1 else f"[0-9]{{{count}}}"


def _digit(low: str, high: str) -> str:
    return f"[{low}]" if low == high else f"[{low}-{high}]"


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives for the digit strings of one length from ``low`` to ``high`` (leading zeros allowed)."""
    if low == high:
        return [literal(low)]
    shared = 0
    while low[shared] == high[shared]:
        shared += 1
    prefix = literal(low[:shared]) + " " if shared else ""
    a, b, rest = low[shared], high[shared], len(low) - shared - 1
    if rest == 0:
        return [prefix + _digit(a, b)]
    low_tail, high_tail = low[shared + 1 :], high[shared + 1 :]
    options = []
    # the first differing digit at its lowest, at its highest, and every digit between taken whole
    whole_from = a if low_tail == "0" * rest else chr(ord(a) + 1)
    whole_to = b if high_tail == "9" * rest else chr(ord(b) - 1)
    if whole_from != a:
        options.append(f"[{a}] " + alternatives(_same_length(low_tail, "9" * rest)))
    if whole_from <= whole_to:
        options.append(f"{_digit(whole_from, whole_to)} {_digits(rest)}")
    if whole_to != b:
        options.append(f"[{b}] " + alternatives(_same_length("0" * rest, high_tail)))
    return [prefix + alternatives(options)] if prefix else options
