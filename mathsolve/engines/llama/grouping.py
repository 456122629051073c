"""Which sequences the batched engine decodes together, when they stand at different depths.

With a KV stream per sequence (the batched engine's default), llama.cpp computes every
stream of a `llama_decode` call over as many cells as the deepest stream in it holds, so the
shallow sequences of a call pay for the deepest one's attention. Measured on 2 CPU cores
(Qwen2.5-Coder-0.5B Q4_K_M, one token per sequence, ms a call, all at one depth;
docs/performance.md section 9):

    sequences x depth   128    1024   2048
    1                   21.1   25.3   28.7
    8                   83.9  117.4  149.6

so a call costs about `fixed + per_token x n + per_cell x n x depth` (fixed ~12 ms: the
weights read once a call; per_token ~8 ms; per_cell ~0.004 ms). Splitting a call in two by
depth pays one more `fixed` and saves `per_cell x n_shallow x (deep - shallow)`: worth it on
a CPU when one long solution runs beside short ones, rarely on a GPU, where reading the
weights (`fixed`) dominates. The costs differ by model and machine, so `DecodeCost` fits
them from the engine's own calls; `groups` then picks the split of the depths, sorted, that
the fitted costs make cheapest (an exact search over contiguous groups). Seven sequences
~100 tokens deep beside one 3,000 deep went from 48-57 to 71-76 tokens/s in all; beside one
2,000 deep the split made no difference beyond the noise.
"""

from __future__ import annotations

# Before this many calls are observed, or beyond this many sequences, nothing is split
# (too little to fit; and the search is quadratic in the sequences, while a batch that wide
# is a GPU's, where splitting does not pay).
MIN_OBSERVED = 16
MAX_SPLIT_SEQUENCES = 64
# The prior the fit starts from, in seconds (the CPU figures above), and how many calls'
# worth of weight it has; a call's depth is counted in thousands of cells, so the three
# terms are of like size for the fit.
PRIOR = (0.012, 0.008, 0.0042)
PRIOR_WEIGHT = 4.0
FORGET = 0.995  # a call's weight decays with each later one: the fit follows the machine


def _solve3(a: list[list[float]], b: list[float]) -> list[float] | None:
    """x with a x = b (3 x 3, Gaussian elimination with pivoting); None if singular."""
    m = [row[:] + [v] for row, v in zip(a, b)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][3] / m[i][i] for i in range(3)]


class DecodeCost:
    """Seconds a decode call of `n` single tokens costs when its deepest stream holds
    `depth` cells: fixed + per_token x n + per_cell x n x depth, a ridge least-squares fit
    to the observed calls, pulled toward PRIOR."""

    def __init__(self) -> None:
        # The prior as PRIOR_WEIGHT pseudo-observations of each term alone.
        self._xtx = [[PRIOR_WEIGHT * (i == j) for j in range(3)] for i in range(3)]
        self._xty = [PRIOR_WEIGHT * p for p in PRIOR]
        self.observed = 0
        self.fixed, self.per_token, self.per_cell = PRIOR[0], PRIOR[1], PRIOR[2] / 1000

    def observe(self, n: int, depth: int, seconds: float) -> None:
        x = (1.0, float(n), n * depth / 1000)
        for i in range(3):
            self._xty[i] = FORGET * self._xty[i] + x[i] * seconds
            for j in range(3):
                self._xtx[i][j] = FORGET * self._xtx[i][j] + x[i] * x[j]
        # The prior keeps its weight: forgetting applies to the observations only.
        for i in range(3):
            self._xtx[i][i] += (1 - FORGET) * PRIOR_WEIGHT
            self._xty[i] += (1 - FORGET) * PRIOR_WEIGHT * PRIOR[i]
        self.observed += 1
        fit = _solve3(self._xtx, self._xty)
        if fit is not None:
            self.fixed, self.per_token, self.per_cell = fit[0], fit[1], fit[2] / 1000

    def groups(self, depths: list[int]) -> list[list[int]]:
        """Indexes into `depths`, in groups to decode one call each, shallowest first."""
        order = sorted(range(len(depths)), key=lambda i: depths[i])
        n = len(order)
        if (n < 2 or n > MAX_SPLIT_SEQUENCES or self.observed < MIN_OBSERVED
                or self.fixed <= 0 or self.per_cell <= 0):
            return [order] if order else []
        # A split saves at most per_cell x n x (deepest - shallowest) and costs at least one
        # more `fixed`: when that cannot pay, skip the quadratic search (most steps).
        if self.per_cell * n * (depths[order[-1]] - depths[order[0]]) <= self.fixed:
            return [order]
        # best[j]: the cheapest way to decode the j shallowest; a group's cost is fixed +
        # per_cell x size x its deepest (per_token x n is the same for every split).
        best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
        for j in range(1, n + 1):
            deepest = depths[order[j - 1]]
            for i in range(j):
                cost = best[i] + self.fixed + self.per_cell * (j - i) * deepest
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        out, j = [], n
        while j > 0:
            out.append(order[cut[j]:j])
            j = cut[j]
        return out[::-1]
