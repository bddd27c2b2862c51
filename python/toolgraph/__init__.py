"""toolgraph: run the tool calls an LLM emits in parallel where safe, in order where not."""
from ._native import __version__

__all__ = ["__version__"]
