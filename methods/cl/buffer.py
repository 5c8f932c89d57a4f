"""Reservoir replay buffer with a fixed budget in items or in bytes (mammoth's ``utils/buffer.py``).

Reservoir sampling (Vitter 1985, Algorithm R) keeps every example of the stream in the
buffer with the same probability ``capacity / seen``. The budget is counted on the stored
examples (the images, or CLFD's encoded features), as the papers count "buffer size":
a byte budget equal to 50 CIFAR images holds 200 CLFD features of a quarter the size.
"""

from __future__ import annotations

import torch


def capacity_for_bytes(budget_bytes: int, item_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int:
    """How many examples of ``item_shape`` and ``dtype`` fit in ``budget_bytes``."""
    item_bytes = torch.Size(item_shape).numel() * torch.empty((), dtype=dtype).element_size()
    return int(budget_bytes // item_bytes)


class ReservoirBuffer:
    """A fixed-capacity reservoir of (example, label, logits) triples.

    Parameters
    ----------
    capacity : int
        Maximum number of stored examples. Use :meth:`from_bytes` for a byte budget.

    Notes
    -----
    Storage is allocated on the first :meth:`add`, with the examples' shape, dtype and
    device; logits are stored only if given (DER++). ``seen`` counts every example offered.
    """

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = int(capacity)
        self.seen = 0
        self.size = 0
        self.examples: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    @classmethod
    def from_bytes(cls, budget_bytes: int, item_shape: tuple[int, ...],
                   dtype: torch.dtype = torch.float32) -> ReservoirBuffer:
        """A buffer holding as many ``item_shape`` examples as ``budget_bytes`` allows."""
        return cls(capacity_for_bytes(budget_bytes, item_shape, dtype))

    def __len__(self) -> int:
        return self.size

    def is_empty(self) -> bool:
        return self.size == 0

    @property
    def nbytes(self) -> int:
        """Bytes of the allocated example storage (the budgeted part)."""
        return 0 if self.examples is None else self.examples.numel() * self.examples.element_size()

    def _allocate(self, examples: torch.Tensor, logits: torch.Tensor | None) -> None:
        self.examples = torch.zeros((self.capacity, *examples.shape[1:]), dtype=examples.dtype, device=examples.device)
        self.labels = torch.zeros(self.capacity, dtype=torch.long, device=examples.device)
        if logits is not None:
            self.logits = torch.zeros((self.capacity, logits.shape[1]), dtype=logits.dtype, device=examples.device)

    def add(self, examples: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None, *,
            generator: torch.Generator) -> None:
        """Offer a batch to the reservoir.

        Parameters
        ----------
        examples : torch.Tensor
            ``(B, ...)``, stored as given (detach them first).
        labels : torch.Tensor
            int64 ``(B,)``.
        logits : torch.Tensor, optional
            ``(B, K)``, the network's outputs when the examples were seen (DER++).
        generator : torch.Generator
            CPU generator for the reservoir draws.
        """
        if self.capacity == 0:
            self.seen += len(examples)
            return
        if self.examples is None:
            self._allocate(examples, logits)
        for index in range(len(examples)):
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                draw = int(torch.randint(0, self.seen + 1, (1,), generator=generator))
                slot = draw if draw < self.capacity else -1
            self.seen += 1
            if slot >= 0:
                self.examples[slot] = examples[index]
                self.labels[slot] = labels[index]
                if self.logits is not None and logits is not None:
                    self.logits[slot] = logits[index]

    def sample(self, count: int, *, generator: torch.Generator):
        """``min(count, len(self))`` distinct stored triples chosen uniformly.

        Returns
        -------
        examples : torch.Tensor
            ``(n, ...)``.
        labels : torch.Tensor
            ``(n,)``.
        logits : torch.Tensor or None
            ``(n, K)`` if logits are stored.
        """
        if self.is_empty():
            raise ValueError("cannot sample from an empty buffer")
        chosen = torch.randperm(self.size, generator=generator)[:count].to(self.examples.device)
        logits = None if self.logits is None else self.logits[chosen]
        return self.examples[chosen], self.labels[chosen], logits

    def clear(self) -> None:
        """Forget every stored example and reset the seen counter."""
        self.size = 0
        self.seen = 0
