"""A guard against references PySide6 loses on Python 3.11.

PySide6 6.12 hands ``None``, ``True`` and ``False`` back to Python without the reference it owes them on
Python 3.11 (from 3.12 on they are immortal, and the reference does not matter): every void Qt call made
from Python (``setText``, ``resize``, …) costs ``None`` one reference, every signal emitted costs ``True``
one. ``None`` starts with a few tens of thousands; an idle window spends about ten a second and a busy
one far more, and when a count reaches zero the interpreter aborts ("deallocating None"): the window
would die after an hour or so. :func:`guard_singletons` makes the three immortal in effect, as Python
3.12 does, by raising their counts once, at start-up, far beyond what any run can spend.
"""

from __future__ import annotations

import ctypes
import sys

IMMORTAL = 1 << 60
"""Added to each count: at a million lost references a second, enough for 36,000 years."""


def guard_singletons() -> bool:
    """Raise the reference counts of ``None``, ``True`` and ``False`` (once; on Python 3.11 and older,
    release builds); whether they were raised now."""
    if sys.version_info >= (3, 12) or hasattr(sys, "getobjects"):  # immortal already, or a debug layout
        return False
    if sys.getrefcount(None) > IMMORTAL // 2:
        return False  # done before in this process
    for singleton in (None, True, False):
        # CPython's object header starts with the reference count (a Py_ssize_t).
        ctypes.c_ssize_t.from_address(id(singleton)).value += IMMORTAL
    return True
