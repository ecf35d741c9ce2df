"""How a download reads to the operator: sizes, speed and time left, in the window and on the command line."""

from __future__ import annotations

from server.hub.downloads import DownloadStatus

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(count: float) -> str:
    """``1.50 GiB``: bytes in the largest unit that keeps the number above one."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} {_UNITS[unit]}" if unit == 0 else f"{value:.2f} {_UNITS[unit]}"


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def speed(status: DownloadStatus) -> str:
    return f"{size(status.speed)}/s" if status.speed is not None else ""


def time_left(status: DownloadStatus) -> str:
    return f"{duration(status.eta_s)} left" if status.eta_s is not None else ""


STATES = {
    "downloading": "Downloading",
    "verifying": "Checking",
    "installing": "Adding to the table",
    "paused": "Paused",
    "failed": "Failed",
    "done": "Done",
}


def describe(status: DownloadStatus) -> str:
    """One line: state, share, bytes, speed and time left (or why it failed, or what became of it)."""
    parts = [
        STATES[status.state],
        f"{status.fraction:.0%}",
        f"{size(status.done_bytes)} of {size(status.total_bytes)}",
    ]
    if status.state == "downloading":
        parts += [p for p in (speed(status), time_left(status)) if p]
    line = "  ".join(parts)
    if status.message and status.state != "downloading":
        line += f": {status.message}"
    return line
