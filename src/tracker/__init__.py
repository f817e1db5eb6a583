"""tracker: real-time GPS tracking server for last-mile delivery."""

__version__ = "0.1.0"
