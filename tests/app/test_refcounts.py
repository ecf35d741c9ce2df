"""PySide6 6.12 loses a reference to None with every void Qt call on Python 3.11 (and one to True with
every signal emitted): without the window's guard the interpreter aborts once the count runs out; with
it, a long day's worth of calls is nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = 200_000
SCRIPT = f"""
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel
from app.refcounts import guard_singletons
if sys.argv[1] == "guarded":
    guard_singletons()
app = QApplication([])
label = QLabel()
class Source(QObject):
    happened = Signal()
source = Source()
source.happened.connect(lambda: None)
for n in range({CALLS}):
    label.setText("x")
    source.happened.emit()
print("survived", flush=True)
"""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None and True are immortal from Python 3.12 on")
def test_the_guard_keeps_the_interpreter_alive_through_a_days_worth_of_qt_calls() -> None:
    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", SCRIPT, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
        )

    guarded = run("guarded")
    assert guarded.returncode == 0 and "survived" in guarded.stdout, guarded.stderr
    unguarded = run("bare")
    if unguarded.returncode == 0:
        pytest.skip("this PySide6 keeps its references: the guard is not needed (but harmless)")
    assert "deallocating" in unguarded.stderr  # what the window would die of
