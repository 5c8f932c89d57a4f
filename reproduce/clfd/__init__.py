"""CLFD (NeurIPS 2024, arXiv 2410.06645): continual learning in the frequency domain."""
