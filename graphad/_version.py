"""The package version, in the core layer: the runtime stamps it into cache keys and artifacts."""
__version__ = "0.1.0"
