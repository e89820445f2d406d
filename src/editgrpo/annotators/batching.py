"""Length-sorted padded batches for the model-backed annotators (CheXbert, RaTE-NER).

Sorting token sequences longest first makes each batch pad to similar lengths; callers put the
results back in input order with the row indices each batch carries.
Shapes: B sequences per batch, T the longest sequence in the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


def padded_batches(
    encoded: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], Any, Any]]:
    """Yield (row indices into ``encoded``, ids (B, T), attention mask (B, T)) as torch tensors."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for row, i in enumerate(rows):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, : len(encoded[i])] = 1
        yield rows, ids, mask
