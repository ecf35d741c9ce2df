"""Grammars that keep a llama.cpp model's output to JSON, and to what a JSON schema accepts.

``json_schema_grammar`` turns a schema into a GBNF grammar; ``JSON_OBJECT_GRAMMAR`` is any JSON object (the
``json_object`` response format, as llama.cpp's server has it: the schema ``{"type": "object"}``);
``GrammarBuilder`` puts several schemas' rules in one grammar, each under a name of its own.
"""

from __future__ import annotations

from server.engines.grammar.schema import GrammarBuilder, SchemaError, json_schema_grammar

JSON_OBJECT_GRAMMAR = json_schema_grammar({"type": "object"})

__all__ = ["JSON_OBJECT_GRAMMAR", "GrammarBuilder", "SchemaError", "json_schema_grammar"]
