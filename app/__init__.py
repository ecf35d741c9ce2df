"""The AI Service Platform window: a PySide6 front end to the embedded server in ``server/``."""
