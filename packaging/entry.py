"""The bundle's entry point: the ``ai-service-platform`` command, frozen.

The headless verbs go straight to ``server.cli``, so ``serve`` and ``keys …`` never load Qt (a server may
have no display libraries at all); anything else opens the window through ``app.main``, as the console
script does.
"""

from __future__ import annotations

import multiprocessing
import sys

HEADLESS = frozenset({"serve", "keys", "models", "usage", "doctor"})


def main() -> int:
    # Imported here, not above: the choice of verb decides whether Qt is loaded at all.
    if len(sys.argv) > 1 and sys.argv[1] in HEADLESS:
        from server.cli import main as headless

        return headless()
    from app.main import main as window

    return int(window() or 0)


if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not start the appliance again
    sys.exit(main())
