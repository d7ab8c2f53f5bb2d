"""keeptime's version: the one place it is written (client/pyproject.toml
reads it from here). A constant, not importlib.metadata, which alone costs
the CLI tens of milliseconds at every start."""
__version__ = "0.1.0"
