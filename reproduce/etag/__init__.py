"""eTag (AAAI 2024, arXiv 2304.10103): class-incremental learning by embedding distillation and task-oriented
generation."""
