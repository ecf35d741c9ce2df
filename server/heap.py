"""Keeping the garbage collector's full passes short while the server runs.

A full collection walks every container object the process holds: the web framework, the validation
models, the loaded engines, the window's widgets; hundreds of thousands of objects, about 40 ms on a
small machine, during which the event loop stands still (every stream's next chunk waits) and so does
the window. Objects that exist once the server is up, or once a model has loaded, live as long as the
process; :func:`settle` moves them out of the collector's sight, so later passes walk only what the
requests since have made. When something long-lived goes away (a model unloads), :func:`release` hands
everything back to the collector, which frees what it left in reference cycles.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Exempt every object alive now from future collections.

    No collection first: at start-up that would hold the interpreter lock for a full pass while the
    window paints its first page. What is already garbage at that moment (little: the collector has been
    running all along) is kept until the next :func:`release`."""
    gc.freeze()


def release() -> None:
    """Hand every object set aside back to the collector, free what is garbage, and set the rest aside
    again (one full pass, on the calling thread)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
