"""Seeds derived from a run's seed and a place in the run (epoch, sample, batch, rank).

Randomness drawn under such a seed depends only on where it is drawn, not on what was drawn
before, in which process, or whether the run was stopped and resumed in between.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1


def derived_seed(seed: int, *place: int) -> int:
    """A 32-bit seed mixed from ``seed`` and ``place`` (numpy's SeedSequence)."""
    entropy = [seed & _MASK, *(part & _MASK for part in place)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
