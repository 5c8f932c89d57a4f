"""FDINet (arXiv 2503.22175): frequency decomposition and integration for efficient continual learning."""
