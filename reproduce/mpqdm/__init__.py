"""MPQ-DM (AAAI 2025, arXiv 2412.11549): mixed-precision quantization for extremely low-bit diffusion models."""
