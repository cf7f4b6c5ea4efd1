"""The package version (one place, read by the package and by run.json)."""

__version__ = "0.1.0"
