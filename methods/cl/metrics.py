"""Continual-learning metrics over an accuracy matrix (mammoth's ``utils/metrics.py``).

``matrix[i, j]`` is the accuracy (in %) on task ``j``'s test set after training task ``i``;
entries for tasks not yet seen (``j > i``) are NaN.
"""

from __future__ import annotations

import numpy as np


def final_average_accuracy(matrix: np.ndarray) -> float:
    """Mean over all tasks of the accuracy after the last task (the papers' "Class-IL"/"Task-IL")."""
    return float(np.mean(np.asarray(matrix, dtype=float)[-1]))


def forgetting(matrix: np.ndarray) -> float:
    """Mean over tasks ``j < T-1`` of ``max_{i < T-1} a[i, j] - a[T-1, j]`` (max minus final).

    This is mammoth's definition (Chaudhry et al. 2018), not Avalanche's initial minus final.
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape[0] < 2:
        return float("nan")
    best = np.nanmax(matrix[:-1, :-1], axis=0)
    return float(np.mean(best - matrix[-1, :-1]))


def backward_transfer(matrix: np.ndarray) -> float:
    """Mean over tasks ``j < T-1`` of ``a[T-1, j] - a[j, j]`` (Lopez-Paz & Ranzato 2017)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape[0] < 2:
        return float("nan")
    count = matrix.shape[0] - 1
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(count)]))
