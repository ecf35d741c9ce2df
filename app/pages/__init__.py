"""The window's pages, one module each, in sidebar order."""
