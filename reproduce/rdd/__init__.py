"""RDD (arXiv 2410.07679): relational diffusion distillation for efficient image generation."""
