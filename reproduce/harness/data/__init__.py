"""Data sources of the harness: SuiteSparse matrices, Matrix Market files and datasets."""
