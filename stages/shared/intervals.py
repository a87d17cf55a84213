"""The Wilson score interval, for eval's accuracies and the sweep's validation figures alike."""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # it holds p, as it does in exact arithmetic: at k = n rounding gave 0.9999999999999999
    # at n = 300, and the eval's plot refused the negative error bar
    return (min(p, max(0.0, center - half)), max(p, min(1.0, center + half)))


def noise(accuracy: float, units: int) -> float:
    """Half the 95% Wilson interval's width at `accuracy` on `units` independent units: what a
    change in accuracy must exceed to count (train.epochs: auto, the epochs advice)."""
    lo, hi = wilson_interval(round(accuracy * units), units)
    return (hi - lo) / 2
