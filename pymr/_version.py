"""pymr's version, in a module of its own: the engine's modules read it without importing
the package's ``__init__`` (whose lazy ``pymr.run`` imports the engine back)."""

__version__ = "0.1.0"
