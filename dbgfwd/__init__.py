"""dbgfwd: forward every rank of a remote distributed Python job to local debugpy attach configs."""

__version__ = "0.1.0"
