"""The headless core of the AI Service Platform: an OpenAI-compatible server with keys and metering."""

__version__ = "0.1.0"
