"""Does an inversion keep the image's identity? Measured from outside, on pixels.

Agreement of ``f(x)`` and ``f(G(E(x)))`` can be high for an encoder that maps every input
to a canonical image of the right class. Two measures see through that, on up to
:data:`GALLERY` held-out inputs and their reconstructions:

- **top-1 retrieval**: the share of reconstructions whose nearest input (Euclidean pixel
  distance) among all the inputs is their own (chance: 1 / the number of inputs);
- **spread ratio**: the mean pairwise pixel distance between reconstructions over the
  same between inputs (1: reconstructions differ from one another as much as the inputs
  do; well below 1: the encoder collapses different inputs onto similar images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

GALLERY = 100  # inputs measured (and retrieved among)
TOP1_GOAL = 0.9


def identity(inputs: np.ndarray, reconstructions: np.ndarray,
             gallery: int = GALLERY) -> dict[str, Any]:
    """Top-1 retrieval, the median rank of the own input, and the spread ratio for the
    first ``gallery`` pairs of ``inputs`` and their ``reconstructions`` (same layout)."""
    n = min(gallery, len(inputs))
    if n < 2 or len(reconstructions) < n:
        raise ValueError("identity needs at least two inputs and a reconstruction of each")
    x = torch.from_numpy(np.asarray(inputs[:n], np.float64).reshape(n, -1))
    r = torch.from_numpy(np.asarray(reconstructions[:n], np.float64).reshape(n, -1))
    d = torch.cdist(r, x)  # reconstruction i to input j
    own = d.diagonal()
    rank = (d < own[:, None]).sum(dim=1)  # inputs nearer than its own (0: retrieved)
    upper = torch.triu_indices(n, n, offset=1)
    spread = (torch.cdist(r, r)[upper[0], upper[1]].mean()
              / torch.cdist(x, x)[upper[0], upper[1]].mean())
    return {"images": n, "top1": float((rank == 0).double().mean()), "chance": 1.0 / n,
            "median_rank": float(rank.double().median()), "spread_ratio": float(spread)}
