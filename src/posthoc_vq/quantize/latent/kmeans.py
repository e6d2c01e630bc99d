"""Euclidean k-means codebooks: Lloyd iterations on tiled BLAS matmuls.

Engine: our own torch code, chosen by measurement (``bench/codebooks.py``; faiss and
scikit-learn stay as references there and in the tests). Per Lloyd iteration:

* assignment, tiled over N: one ``addmm`` gives the (chunk, K) block ||c||^2 - 2 z.c for a
  chunk of points, small enough to stay in cache while it is reduced. Torch's
  ``min(dim=1)`` with indices costs about half as much as the matmul (D is only 128), so the
  row argmin is done in two cheap steps instead (:func:`_row_argmin`);
* update: sums kept in float64 and updated only for points whose label changed (the full
  ``index_add_`` over N costs ~7% of an iteration, the changes are a few percent of N late
  in the run);
* the data are centred first (as scikit-learn does) so that ||z||^2 - 2 z.c + ||c||^2 in
  float32 loses little to cancellation.

Seeding is k-means++ (D^2 sampling, one candidate per step) on a random subsample, drawn
by rejection sampling from distances refreshed in batches (:func:`kmeans_plusplus`) so the
refresh is a matmul rather than K matrix-vector products.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from posthoc_vq.quantize.latent.base import CodebookEstimator, as_latents

GROUP = 16  # columns per group in the two-step argmin; K is padded to a multiple of it
BLOCK_FLOATS = 1 << 21  # (chunk, K) distance block of 8 MiB: L3-resident, large enough for full-speed sgemm


def _row_best(d: torch.Tensor, best: torch.Tensor, label: torch.Tensor, others: torch.Tensor) -> None:
    """Row minimum of ``d`` (m, K) into ``best`` (m,), its column into ``label`` (m,), and the
    minimum of each column group, excluding the winner, into ``others`` (m, W).

    K is a multiple of GROUP; column j = t * W + w belongs to group w (W = K / GROUP). A
    vectorised ``amin`` over t gives the group minima; the argmin over those and the winning
    group's GROUP entries are 1/GROUP the size of ``d``, so this costs ~10% of the (m, K)
    matmul where ``d.min(1)`` costs ~60%. The winning group's entry becomes its runner-up.
    """
    m, K = d.shape
    W = K // GROUP
    d3 = d.view(m, GROUP, W)
    torch.amin(d3, 1, out=others)
    w = others.argmin(1)
    rows = torch.arange(m)
    cand = d3[rows, :, w]  # (m, GROUP): the winning group
    t = cand.argmin(1)
    best.copy_(cand[rows, t])
    torch.add(w, t, alpha=W, out=label)
    cand[rows, t] = float("inf")
    others[rows, w] = cand.amin(1)


def assign(X: torch.Tensor, C: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of ``X`` and the nearest other one per column group, tiled over rows.

    Parameters
    ----------
    X : (N, D) float32 points.
    C : (K, D) float32 centroids; padded to Kp = GROUP * W rows that never win.
    chunk : rows per tile; default keeps the (chunk, Kp) block at about 8 MiB.

    Returns
    -------
    labels : (N,) int64 nearest centroid.
    best : (N,) float32, ||c||^2 - 2 x.c for the nearest c; add ||x||^2 for the squared distance.
    others : (N, W) float32, the same for the nearest centroid other than ``labels`` among
        centroids w, w + W, w + 2W, ... (+inf where there is none).
    """
    N, D = X.shape
    K = len(C)
    Kp = -(-K // GROUP) * GROUP
    # padding centroids score +inf (bias inf, weights 0) so they are never chosen
    Cp = torch.zeros(Kp, D, dtype=torch.float32)
    Cp[:K] = C
    bias = torch.full((Kp,), float("inf"))
    bias[:K] = (C * C).sum(1)
    chunk = chunk or max(256, BLOCK_FLOATS // Kp)
    labels = torch.empty(N, dtype=torch.int64)
    best = torch.empty(N, dtype=torch.float32)
    others = torch.empty(N, Kp // GROUP, dtype=torch.float32)
    buf = torch.empty(min(chunk, N), Kp)
    for s in range(0, N, chunk):
        x = X[s : s + chunk]
        d = torch.addmm(bias, x, Cp.T, alpha=-2.0, out=buf[: len(x)])
        _row_best(d, best[s : s + chunk], labels[s : s + chunk], others[s : s + chunk])
    return labels, best, others


def kmeans_plusplus(S: torch.Tensor, K: int, rng: np.random.Generator) -> torch.Tensor:
    """Indices (K,) int64 of k-means++ seeds among the rows of ``S`` (n, D) float32.

    Each seed is drawn with probability proportional to its squared distance to the nearest
    seed so far (D^2 sampling, one candidate per step). Instead of updating all n distances
    after every seed (K matrix-vector products, memory-bound), the distances are refreshed in
    batches by one matmul, and in between a draw from the stale distances (which can only
    over-estimate) is accepted with probability true / stale, where the true value also
    checks the seeds added since the refresh. Rejection sampling makes this exactly D^2
    sampling; batches grow with the seed count (a quarter of it) because later seeds lower
    the total less, so few draws are rejected.
    """
    n = len(S)
    S_np = S.numpy()
    s_sq = (S * S).sum(1)
    seeds = [int(rng.integers(n))]
    pending = list(seeds)  # seeds not yet folded into `closest`
    closest = torch.full((n,), float("inf"))
    rejected = 0
    while len(seeds) < K:
        if len(pending) >= max(1, len(seeds) // 4) or rejected >= 8:
            P = S[pending]
            p_sq = (P * P).sum(1)
            for s in range(0, n, 8192):  # (8192, batch) blocks
                d = torch.addmm(p_sq, S[s : s + 8192], P.T, alpha=-2.0).amin(1).add_(s_sq[s : s + 8192]).clamp_(min=0.0)
                torch.minimum(closest[s : s + 8192], d, out=closest[s : s + 8192])
            closest[pending] = 0.0  # not a rounding residue: a seed is never drawn again
            stale = closest.numpy().astype(np.float64)
            cum = np.cumsum(stale)
            pending, rejected = [], 0
        if cum[-1] <= 0.0:  # every point coincides with a seed: take unused points uniformly
            free = np.setdiff1d(np.arange(n), seeds)
            seeds += [int(j) for j in rng.choice(free, K - len(seeds), replace=False)]
            break
        j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
        true = stale[j]
        if pending:
            diff = S_np[pending] - S_np[j]
            true = min(true, float(np.einsum("pd,pd->p", diff, diff).min()))
        if rng.random() * stale[j] < true:
            seeds.append(j)
            pending.append(j)
        else:
            rejected += 1
    return torch.tensor(seeds, dtype=torch.int64)


class _Lloyd:
    """Assignment state of Lloyd iterations with group lower bounds (exact pruning, "Yinyang"
    style with the column groups of :func:`assign`).

    Per point: ``labels``, an upper bound ``upper`` on its distance to its centroid, and for
    each centroid group a lower bound ``lower`` (N, W) on its distance to that group's other
    centroids. When centroid j moves by ``shift[j]``, ``upper += shift[label]`` and each
    group's bound drops by the group's largest shift. A point whose upper bound stays below
    all its group bounds keeps its label without a distance computation; the others are
    gathered and go through :func:`assign`, which resets their bounds. With one global
    bound (Hamerly) a single far-moving centroid forces nearly every point through; per
    group, on the stand-in benchmark data ~30% of the distance work is skipped over 20
    iterations (most of it late, and in the final assignment). Memory: N * K / 16 floats.
    Cluster sums are float64 and change only by the points whose label changed.
    """

    def __init__(self, X: torch.Tensor, K: int, chunk: int | None):
        N, D = X.shape
        self.X, self.chunk = X, chunk
        self.x_sq = (X * X).sum(1)
        self.x_total = float((X.double() ** 2).sum())
        self.labels = torch.full((N,), -1, dtype=torch.int64)
        self.upper = torch.full((N,), float("inf"))
        self.lower = torch.zeros(N, -(-K // GROUP))
        self.sums = torch.zeros(K, D, dtype=torch.float64)

    def reassign(self, C: torch.Tensor) -> int:
        """Re-label every point whose bounds allow a closer centroid; returns how many changed."""
        N = len(self.X)
        idx = (self.upper > self.lower.amin(1)).nonzero().squeeze(1)
        if len(idx) > 0.9 * N:  # a gather would cost more than the few skipped rows save
            idx = torch.arange(N)
        if len(idx) == 0:
            return 0
        full = len(idx) == N
        X = self.X if full else self.X[idx]
        lab, best, others = assign(X, C, self.chunk)
        x_sq = self.x_sq if full else self.x_sq[idx]
        # float32 rounding of ||x||^2 - 2 x.c + ||c||^2 is ~1e-7 of these terms: widen the bounds
        # by far more, so pruning never decides differently from a full pass beyond rounding
        slack = 1e-5 * (x_sq + float((C * C).sum(1).max()))
        self.upper[idx] = (best + x_sq + slack).clamp_(min=0).sqrt_()
        self.lower[idx] = others.add_((x_sq - slack).unsqueeze(1)).clamp_(min=0).sqrt_()
        old = self.labels[idx]
        moved = (lab != old).nonzero().squeeze(1)
        for s in range(0, len(moved), 1 << 16):  # bounded float64 temporaries
            m = moved[s : s + (1 << 16)]
            x = X[m].double()
            self.sums.index_add_(0, lab[m], x)
            if old[m[0]] >= 0:  # all -1 on the first pass, all valid after it
                self.sums.index_add_(0, old[m], x, alpha=-1.0)
        self.labels[idx] = lab
        return len(moved)

    def widen(self, shift: torch.Tensor) -> None:
        """Loosen the bounds after centroid ``j`` moved by ``shift[j]`` (Euclidean)."""
        W = self.lower.shape[1]
        self.upper += shift[self.labels]
        group_shift = torch.zeros(GROUP * W)
        group_shift[: len(shift)] = shift
        self.lower -= group_shift.view(GROUP, W).amax(0)

    def inertia(self, C: torch.Tensor, counts: torch.Tensor) -> float:
        """Sum of squared distances to the assigned centroids, from the cluster sums:
        sum ||x||^2 - 2 sum_j c_j . S_j + sum_j n_j ||c_j||^2 (float64, O(K D))."""
        C = C.double()
        return self.x_total - 2.0 * float((C * self.sums).sum()) + float((counts * (C * C).sum(1)).sum())

    def reseed(self, C: torch.Tensor, counts: torch.Tensor) -> int:
        """Give every empty cluster the point farthest from its centroid (distinct points, never
        emptying their old cluster); updates sums, counts and labels; returns the number of empties."""
        dist = ((self.X - C[self.labels]) ** 2).sum(1)
        order = torch.argsort(dist, descending=True, stable=True).tolist()
        empty = (counts == 0).nonzero().squeeze(1).tolist()
        pos = 0
        for e in empty:
            while counts[self.labels[order[pos]]] <= 1:
                pos += 1
            p = order[pos]
            x, old = self.X[p].double(), int(self.labels[p])
            self.sums[old] -= x
            self.sums[e] = x
            counts[old] -= 1
            counts[e] = 1
            self.labels[p] = e
            self.upper[p] = float("inf")  # bounds refer to the old centroid: recompute
            pos += 1
        return len(empty)


class KMeans(CodebookEstimator):
    """K-means (Lloyd) codebook in Euclidean space.

    Parameters
    ----------
    n_clusters : codebook size K.
    init : "k-means++", "random" (K distinct points) or an explicit (K, D) array.
    init_sample_size : points k-means++ runs on, drawn at random without replacement. Default
        min(N, max(20 K, 10_000)): 20 points per seed are enough for D^2 sampling to place
        seeds where the data are, and seeding then costs about a third of one Lloyd
        iteration at N = 70,000, K = 1024.
    max_iter : Lloyd iterations at most.
    tol : stop once the summed squared centroid shift is <= tol * (mean per-feature variance
        of Z), scikit-learn's criterion; also stops when no label changes.
    random_state : seed of the subsample and of the seeding.
    chunk_size : rows per distance tile (default: an 8 MiB (chunk, K) block).

    Attributes
    ----------
    codebook_ : (K, D) float32 centroids.
    labels_ : (N,) int64 nearest centroid of each training point (against ``codebook_``).
    inertia_ : float, sum of squared distances of the points to ``codebook_[labels_]``.
    n_iter_ : int, Lloyd iterations run.
    n_reseeded_ : int, empty clusters re-seeded (with the farthest points), all iterations.
    inertia_history_ : list of float, inertia of each iteration's assignment (before its update).
    """

    method = "kmeans"

    def __init__(self, n_clusters: int = 1024, *, init: Any = "k-means++", init_sample_size: int | None = None, max_iter: int = 100, tol: float = 1e-4, random_state: int = 0, chunk_size: int | None = None):
        self.n_clusters = n_clusters
        self.init = init
        self.init_sample_size = init_sample_size
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ fitting
    def _initial_centroids(self, X: torch.Tensor, mean: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        N, D = X.shape
        K = int(self.n_clusters)
        if isinstance(self.init, str) and self.init == "random":
            return X[torch.from_numpy(rng.choice(N, K, replace=False))].clone()
        if isinstance(self.init, str) and self.init == "k-means++":
            n = self.init_sample_size or max(20 * K, 10_000)
            n = min(N, max(int(n), K))
            sub = torch.from_numpy(np.sort(rng.choice(N, n, replace=False))) if n < N else torch.arange(N)
            S = X[sub]
            return S[kmeans_plusplus(S, K, rng)].clone()
        if isinstance(self.init, str):
            raise ValueError(f"init must be 'k-means++', 'random' or a (K, D) array, got '{self.init}'")
        C = np.asarray(self.init, dtype=np.float64)
        if C.shape != (K, D):
            raise ValueError(f"explicit init must have shape (n_clusters, D) = {(K, D)}, got {C.shape}")
        return torch.from_numpy((C - mean).astype(np.float32))

    def fit(self, Z, y=None) -> "KMeans":
        """Learn K centroids from ``Z`` (N, D) float32; returns ``self``."""
        Z = as_latents(Z)
        N, D = Z.shape
        K = int(self.n_clusters)
        if not 1 <= K <= N:
            raise ValueError(f"n_clusters must lie in [1, N={N}], got {self.n_clusters}")
        if int(self.max_iter) < 1 or float(self.tol) < 0:
            raise ValueError(f"need max_iter >= 1 and tol >= 0, got max_iter={self.max_iter}, tol={self.tol}")
        rng = np.random.default_rng(self.random_state)
        mean = Z.mean(0, dtype=np.float64)
        X = torch.from_numpy((Z - mean).astype(np.float32))
        tol = float(self.tol) * float(Z.var(0, dtype=np.float64).mean())
        C = self._initial_centroids(X, mean, rng)
        state = _Lloyd(X, K, self.chunk_size)

        self.inertia_history_, self.n_reseeded_ = [], 0
        converged = False
        for it in range(int(self.max_iter)):
            changed = state.reassign(C)
            counts = torch.bincount(state.labels, minlength=K)
            self.inertia_history_.append(state.inertia(C, counts))
            if (counts == 0).any():
                self.n_reseeded_ += state.reseed(C, counts)
            elif it and not changed:  # strict convergence: the centroids would not move
                converged = True
                break
            C_new = (state.sums / counts.unsqueeze(1)).float()
            shift = ((C_new - C).double() ** 2).sum(1)
            state.widen(shift.sqrt().float())
            C = C_new
            if float(shift.sum()) <= tol:
                break
        self.n_iter_ = it + 1
        if converged:
            self.inertia_ = self.inertia_history_[-1]
        else:  # labels must refer to the final centroids
            state.reassign(C)
            self.inertia_ = state.inertia(C, torch.bincount(state.labels, minlength=K))
        self.codebook_ = (C.double() + torch.from_numpy(mean)).float().numpy()
        self.labels_ = state.labels.numpy()
        return self

    # ------------------------------------------------------------------ persistence
    def state_info(self) -> dict[str, Any]:
        self._check_fitted()
        return {key: getattr(self, key + "_", None) for key in ("n_iter", "n_reseeded", "inertia")}

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        super().load_state(tensors, info)
        for key in ("n_iter", "n_reseeded", "inertia"):
            if info.get(key) is not None:
                setattr(self, key + "_", info[key])
