"""The OpenAI wire format: request models (strict, bounded) and response builders, plus SSE framing.

Pure: imports nothing else from ``server``. Field names and order follow OpenAI's OpenAPI document.
"""
