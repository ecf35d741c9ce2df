"""Generation as the API uses it: what a client asked for (``Ask``) prepared against a model (``prepare``),
then run as a metered stream of deltas and tool calls (``run``), or gathered whole (``collect``).

Both ``/v1/chat/completions`` and ``/v1/responses`` go through here; only the HTTP layer knows how the
events are framed. ``thinking`` splits a reasoning model's thought from its answer, ``tool_calls`` takes
calls out of the text and builds the grammars that enforce them, ``remote`` runs a request on an upstream
engine, ``events`` is what a generation yields.
"""

from server.generation.prepare import Ask, Prepared, message, prepare, thinking
from server.generation.stream import Collected, collect, run

__all__ = ["Ask", "Collected", "Prepared", "collect", "message", "prepare", "run", "thinking"]
