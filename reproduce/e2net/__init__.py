"""E2Net (arXiv 2309.16117): resource-efficient continual learning with an elastic expansion network."""
