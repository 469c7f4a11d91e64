"""streetwatch: the command-line entry point and the wiring of the layers (detect, pipelines, api)."""

__version__ = "0.1.0"
