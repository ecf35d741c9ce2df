"""Engines run models. Each built-in engine registers exactly as an extension would (see ``registry``)."""
