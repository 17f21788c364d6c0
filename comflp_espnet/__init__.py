"""CoMFLP layer pruning for ESPnet speech recognizers."""

__version__ = "0.1.0"
