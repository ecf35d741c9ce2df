"""The scriptable mock upstream (``tests/support/mock_upstream.py``) as a process of its own.

``python -m bench.mock_server --port P --chunks N --interval S`` serves until terminated. The mock keeps
every request body it sees (tests read them); here that list discards them, so a long run stays small.
"""

from __future__ import annotations

import argparse
import signal
import threading

from tests.support.mock_upstream import MockUpstream, Script


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _item: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--model", default="m")
    args = parser.parse_args()
    mock = MockUpstream(Script(chunks=args.chunks, interval=args.interval, model=args.model), port=args.port)
    mock.requests = _Discard()
    mock.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    mock.stop()


if __name__ == "__main__":
    main()
