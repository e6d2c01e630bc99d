"""Euclidean k-means codebooks: Lloyd iterations on tiled BLAS matmuls, with exact pruning.

Engine: our own torch code, chosen by measurement (``bench/codebooks.py``; faiss and
scikit-learn stay as references there and in the tests). Per Lloyd iteration:

* assignment (:func:`assign`), tiled over N: one ``addmm`` per cache-sized (chunk, K) block
  of ||c||^2 - 2 z.c, reduced by a two-step argmin (:func:`_row_best`, ~10% of the matmul
  where torch's ``min(dim=1)`` costs ~60% at D = 128) that also yields per-group runner-ups;
* pruning (:class:`_Lloyd`, Yinyang k-means): with centroids in spatial groups, runner-ups
  are lower bounds that let a point skip the groups that cannot hold its nearest centroid;
* update: cluster sums in float64, changed only by the points whose label changed; the
  data are centred first (as scikit-learn does) to limit float32 cancellation.

Assignment passes (and the seeding's distance refreshes) run in pieces of ``PIECE_ROWS`` rows
on Python threads, each with one torch thread (:class:`RowPool`): torch's own per-op OpenMP
parallelism meets at a barrier after every small op, which on a shared CPU made whole fits
several times slower (2 to 14x the sgemm bound on 2 contended cores, ``bench/codebooks.py``;
0.65 to 1.0x with pieces, which meet once per pass).

Seeding is k-means++ (D^2 sampling, one candidate per step) on a random subsample
(:func:`kmeans_plusplus`).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from posthoc_vq.progress import report
from posthoc_vq.quantize.latent.base import CodebookEstimator
from posthoc_vq.quantize.latent.rowpool import RowPool

GROUP_WIDTH = 64  # centroids per group: torch's amin is fast over >= 32 contiguous floats, slow over 16
BLOCK_FLOATS = 1 << 21  # (chunk, K) distance block of 8 MiB: L3-resident, large enough for full-speed sgemm
PIECE_ROWS = 4096  # rows per parallel piece of an assignment pass (:class:`RowPool`)
INF = float("inf")


def _row_best(d: torch.Tensor, G: int, best: torch.Tensor, col: torch.Tensor, others: torch.Tensor) -> None:
    """Row minimum of ``d`` (m, G * S) into ``best`` (m,), its column into ``col`` (m,), and the
    minimum of each group of S contiguous columns, excluding the winner, into ``others`` (m, G).

    A vectorised ``amin`` gives group minima; only the argmin over those and over the winning
    group's S entries run the slow (scalar) argmin code.
    """
    m = d.shape[0]
    S = d.shape[1] // G
    d3 = d.view(m, G, S)
    torch.amin(d3, 2, out=others)
    w = others.argmin(1)
    rows = torch.arange(m)
    cand = d3[rows, w]  # (m, S): the winning group
    t = cand.argmin(1)
    best.copy_(cand[rows, t])
    cand[rows, t] = INF
    others[rows, w] = cand.amin(1)
    torch.add(t, w, alpha=S, out=col)


def contiguous_groups(K: int) -> torch.Tensor:
    """(G, S) groups of consecutive centroids, S <= GROUP_WIDTH, -1 = padding."""
    G = -(-K // GROUP_WIDTH)
    g = torch.arange(G * -(-K // G)).view(G, -1)
    return torch.where(g < K, g, -1)


def assign(X: torch.Tensor, C: torch.Tensor, chunk: int | None = None, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of ``X`` (N, D) among ``C`` (K, D), and the nearest other
    centroid of each group, tiled over rows (``chunk`` rows; default: an 8 MiB block).

    ``groups`` (G, S) int64 lists each group's centroids, -1 = padding (default
    :func:`contiguous_groups`). Returns labels (N,) int64; best (N,) float32, ||c||^2 - 2 x.c
    of the nearest c (add ||x||^2 for the squared distance); others (N, G) float32, the same
    for each group's nearest centroid other than the label (+inf if none).
    """
    N, D = X.shape
    groups = contiguous_groups(len(C)) if groups is None else groups
    G, S = groups.shape
    Cp, bias = (t.flatten(0, 1) for t in _padded(C, groups))  # column w * S + t: centroid groups[w, t]
    chunk = chunk or max(256, BLOCK_FLOATS // (G * S))
    col, best, others = torch.empty(N, dtype=torch.int64), torch.empty(N), torch.empty(N, G)
    buf = torch.empty(min(chunk, N), G * S)
    for s in range(0, N, chunk):
        x = X[s : s + chunk]
        d = torch.addmm(bias, x, Cp.T, alpha=-2.0, out=buf[: len(x)])
        _row_best(d, G, best[s : s + chunk], col[s : s + chunk], others[s : s + chunk])
    return groups.reshape(-1)[col], best, others


def _padded(C: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids (G, S, D) and squared norms (G, S) laid out as ``groups``; padding has
    weights 0 and norm +inf, so it scores +inf and never wins."""
    real = groups >= 0
    Cp = torch.zeros(*groups.shape, C.shape[1])
    Cp[real] = C[groups[real]]
    return Cp, torch.where(real, (Cp * Cp).sum(2), INF)


def balanced_groups(C: torch.Tensor, G: int) -> torch.Tensor:
    """(G, S) indices of G spatially coherent groups of (nearly) equal size, G a power of 2:
    recursive halving at the median of each part's principal axis (a few power iterations
    from a fixed start); -1 pads short groups."""
    parts = [torch.arange(len(C))]
    while len(parts) < G:
        halves = []
        for p in parts:
            P = C[p].double() - C[p].double().mean(0)
            axis = P.abs().sum(0)
            for _ in range(8):
                axis = P.T @ (P @ axis)
                axis /= axis.norm().clamp(min=1e-300)
            order = p[torch.argsort(P @ axis, stable=True)]
            halves += [order[: len(p) // 2], order[len(p) // 2 :]]
        parts = halves
    out = torch.full((G, max(len(p) for p in parts)), -1, dtype=torch.int64)
    for w, p in enumerate(parts):
        out[w, : len(p)] = p
    return out


def kmeans_plusplus(S: torch.Tensor, K: int, rng: np.random.Generator, pool: RowPool) -> torch.Tensor:
    """Indices (K,) int64 of k-means++ seeds (D^2 sampling, one candidate per step) among the rows of ``S`` (n, D).

    Rather than K memory-bound matrix-vector updates, distances are refreshed by a matmul in
    batches (a quarter of the seed count), pieces of rows in parallel on ``pool``; in between,
    a draw from the stale distances (which only over-estimate) is accepted with probability
    true / stale, the true value also checking the seeds added since the refresh. This
    rejection sampling is exactly D^2 sampling.
    """
    n = len(S)
    S_np = S.numpy()
    s_sq = (S * S).sum(1)
    seeds = [int(rng.integers(n))]
    pending = list(seeds)  # seeds not yet folded into `closest`
    closest = torch.full((n,), INF)
    rejected = 0
    while len(seeds) < K:
        if len(pending) >= max(1, len(seeds) // 4) or rejected >= 8:
            P = S[pending]
            p_sq = (P * P).sum(1)

            def refresh(s: int, e: int) -> None:
                d = torch.addmm(p_sq, S[s:e], P.T, alpha=-2.0).amin(1).add_(s_sq[s:e]).clamp_(min=0.0)
                torch.minimum(closest[s:e], d, out=closest[s:e])

            pool.map(refresh, n, PIECE_ROWS)
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
    """Assignment state of Lloyd iterations with Yinyang-style pruning (exact).

    The centroids are split once into G spatially coherent groups (:func:`balanced_groups`).
    Per point: ``labels``, an upper bound ``upper`` on its distance to its centroid, and per
    group a lower bound ``lower`` (N, G) on its distance to the group's other centroids.
    When centroid j moves by ``shift[j]``, ``upper += shift[label]`` and each group's bound
    drops by the group's largest shift. Then:

    * a point with upper <= min(lower) keeps its label without any distance computation;
    * otherwise only its own group and groups with bound below its upper bound can hold its
      nearest centroid: a few near groups, as groups are spatial (over 20 iterations on the
      stand-in benchmark data, ~20% of dense Lloyd's distance work). Those (point, group)
      pairs are gathered into one matmul per group; when they are most of the work (the
      first pass), one dense pass (:func:`assign`) is cheaper and sets every bound.

    A pass runs in pieces of ``PIECE_ROWS`` rows in parallel, each deciding between the two
    for its own points and writing only their bounds; labels and sums change after the pass.
    """

    def __init__(self, X: torch.Tensor, C: torch.Tensor, chunk: int | None, pool: RowPool):
        N, D = X.shape
        K = len(C)
        self.X, self.chunk = X, chunk
        # float64 norms for an exact total: inertia is x_total - 2 sum c.S + sum n |c|^2, which cancels
        x_sq = torch.empty(N, dtype=torch.float64)

        def norms(s: int, e: int) -> None:
            x = X[s:e].double()  # piece by piece: one large temporary would cost more in page faults
            x_sq[s:e] = torch.einsum("nd,nd->n", x, x)

        pool.map(norms, N, PIECE_ROWS)
        self.x_sq, self.x_total = x_sq.float(), float(x_sq.sum())
        G = 1 << max(0, min(4, (K // GROUP_WIDTH).bit_length() - 1))  # 16 groups of 64 at K = 1024
        self.groups = balanced_groups(C, G)
        real = self.groups >= 0
        self.group_of = torch.empty(K, dtype=torch.int64)
        self.group_of[self.groups[real]] = torch.arange(G).unsqueeze(1).expand_as(self.groups)[real]
        self.sizes = real.sum(1).float()
        self.labels, self.upper, self.lower = torch.full((N,), -1), torch.full((N,), INF), torch.zeros(N, G)
        self.sums = torch.zeros(K, D, dtype=torch.float64)

    def reassign(self, C: torch.Tensor, pool: RowPool) -> int:
        """Re-label every point whose bounds allow a closer centroid, pieces of rows in
        parallel on ``pool``; returns how many changed."""
        Cg, bias = _padded(C, self.groups)
        c_sq_max = float((C * C).sum(1).max())
        parts = pool.map(lambda s, e: self._reassign_rows(C, Cg, bias, c_sq_max, s, e), len(self.X), PIECE_ROWS)
        return self._relabel(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    def _reassign_rows(self, C: torch.Tensor, Cg: torch.Tensor, bias: torch.Tensor, c_sq_max: float, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Points ``idx`` among rows s:e that may have a closer centroid, and their nearest
        centroids ``lab``; sets their bounds. ``Cg``, ``bias``: :func:`_padded` ``C``;
        ``c_sq_max``: the largest ||c||^2."""
        idx = (self.upper[s:e] > self.lower[s:e].amin(1)).nonzero().squeeze(1).add_(s)
        if len(idx) == 0:
            return idx, idx
        if self.labels[0] < 0:  # first pass
            return idx, self._dense(C, c_sq_max, idx)
        # groups whose bound is below the upper bound may hold a closer centroid; the own
        # group is always searched, which also gives the exact distance to the own centroid
        need = self.lower[idx] < self.upper[idx].unsqueeze(1)
        need[torch.arange(len(idx)), self.group_of[self.labels[idx]]] = True
        if float((need.float() @ self.sizes).sum()) > 0.4 * len(idx) * len(C):  # mostly needed: one dense pass
            return idx, self._dense(C, c_sq_max, idx)
        return idx, self._grouped(Cg, bias, c_sq_max, idx, need)

    @staticmethod
    def _slack(x_sq: torch.Tensor, c_sq_max: float) -> torch.Tensor:
        # float32 rounding of ||x||^2 - 2 x.c + ||c||^2 is ~1e-7 of these terms: widen the bounds
        # by far more, so pruning never decides differently from a full pass beyond rounding
        return 1e-5 * (x_sq + c_sq_max)

    def _dense(self, C: torch.Tensor, c_sq_max: float, idx: torch.Tensor) -> torch.Tensor:
        """Nearest centroid (returned) and every group bound for points ``idx``."""
        x_sq = self.x_sq[idx]
        lab, best, others = assign(self.X.index_select(0, idx), C, self.chunk, self.groups)
        slack = self._slack(x_sq, c_sq_max)
        self.upper[idx] = (best + x_sq + slack).clamp_(min=0).sqrt_()
        self.lower[idx] = others.add_((x_sq - slack).unsqueeze(1)).clamp_(min=0).sqrt_()
        return lab

    def _grouped(self, Cg: torch.Tensor, bias: torch.Tensor, c_sq_max: float, idx: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """Nearest centroid (returned) of points ``idx``, searching only their groups ``need``
        (n, G), each group in one matmul; sets their bounds.

        Group minima (fast ``amin``) decide each point's winning group; the slow argmin and
        runner-up run only on that group's row of each point.
        """
        pairs = need.T.nonzero()  # (group, point) pairs, by group
        per_group = need.sum(0).tolist()
        points = pairs[:, 1].split(per_group)
        rows = self.X.index_select(0, idx[pairs[:, 1]]).split(per_group)
        mins = torch.full(need.T.shape, INF)  # (G, n) group minima in the matmul's units ||c||^2 - 2 x.c
        blocks = []
        for w, (P, x) in enumerate(zip(points, rows)):
            if len(P):
                d = torch.addmm(bias[w], x, Cg[w].T, alpha=-2.0)  # (|P|, S)
                mins[w, P] = d.amin(1)
                blocks.append((w, P, d))
        best, best_group = mins.min(0)
        lab = torch.empty(len(idx), dtype=torch.int64)
        for w, P, d in blocks:  # a group's bound excludes the point's final centroid
            win = (best_group[P] == w).nonzero().squeeze(1)
            dw = d[win]
            t = dw.argmin(1)
            lab[P[win]] = self.groups[w][t]
            dw[torch.arange(len(win)), t] = INF
            mins[w, P[win]] = dw.amin(1)
        x_sq = self.x_sq[idx]
        slack = self._slack(x_sq, c_sq_max)
        lower = mins.T.add_((x_sq - slack).unsqueeze(1)).clamp_(min=0).sqrt_()
        self.lower[idx] = torch.where(need, lower, self.lower[idx])
        self.upper[idx] = (best + x_sq + slack).clamp_(min=0).sqrt_()
        return lab

    def _relabel(self, idx: torch.Tensor, lab: torch.Tensor) -> int:
        """Set labels of points ``idx`` to ``lab``, moving changed points between cluster sums."""
        old = self.labels[idx]
        moved = (lab != old).nonzero().squeeze(1)
        for s in range(0, len(moved), PIECE_ROWS):  # small float64 temporaries: no page faults
            m = moved[s : s + PIECE_ROWS]
            x = self.X.index_select(0, idx[m]).double()
            self.sums.index_add_(0, lab[m], x)
            if old[m[0]] >= 0:  # all -1 on the first pass, all valid after it
                self.sums.index_add_(0, old[m], x, alpha=-1.0)
        self.labels.index_put_((idx,), lab)
        return len(moved)

    def widen(self, shift: torch.Tensor) -> None:
        """Loosen the bounds after centroid ``j`` moved by ``shift[j]`` (Euclidean)."""
        self.upper += shift[self.labels]
        self.lower -= torch.cat([shift, shift.new_zeros(1)])[self.groups].amax(1)  # padding (-1) reads 0

    def inertia(self, C: torch.Tensor, counts: torch.Tensor) -> float:
        """Sum of squared distances to the assigned centroids, from the cluster sums:
        sum ||x||^2 - 2 sum_j c_j . S_j + sum_j n_j ||c_j||^2 (float64, O(K D))."""
        C = C.double()
        return self.x_total - 2.0 * float((C * self.sums).sum()) + float((counts * (C * C).sum(1)).sum())

    def reseed(self, C: torch.Tensor, counts: torch.Tensor) -> int:
        """Give every empty cluster the point farthest from its centroid (distinct points, never
        emptying their old cluster); updates sums, counts and labels; returns the number of empties."""
        order = iter(torch.argsort(((self.X - C[self.labels]) ** 2).sum(1), descending=True, stable=True).tolist())
        empty = (counts == 0).nonzero().squeeze(1).tolist()
        for e in empty:
            p = next(q for q in order if counts[self.labels[q]] > 1)
            x, old = self.X[p].double(), int(self.labels[p])
            self.sums[old] -= x
            self.sums[e] = x
            counts[old] -= 1
            counts[e] = 1
            self.labels[p] = e
            self.upper[p], self.lower[p] = INF, 0.0  # bounds refer to the old centroid: recompute
        return len(empty)


class KMeans(CodebookEstimator):
    """K-means (Lloyd) codebook in Euclidean space.

    Parameters
    ----------
    n_clusters : codebook size K.
    init : "k-means++", "random" (K distinct points) or an explicit (K, D) array.
    init_sample_size : points k-means++ runs on, drawn at random without replacement. Default
        min(N, max(20 K, 10_000)): 20 points per seed are enough for D^2 sampling to place
        seeds where the data are, and seeding then costs about one dense Lloyd iteration
        (~0.1 s at N = 70,000, K = 1024, D = 128 on 2 cores).
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

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "init_sample_size": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],  # a numpy.random.default_rng seed
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, n_clusters: int = 1024, *, init: Any = "k-means++", init_sample_size: int | None = None, max_iter: int = 100, tol: float = 1e-4, random_state: int = 0, chunk_size: int | None = None):
        self.n_clusters, self.init, self.init_sample_size = n_clusters, init, init_sample_size
        self.max_iter, self.tol, self.random_state, self.chunk_size = max_iter, tol, random_state, chunk_size

    def _initial_centroids(self, X: torch.Tensor, mean: np.ndarray, rng: np.random.Generator, pool: RowPool) -> torch.Tensor:
        N, D = X.shape
        K = int(self.n_clusters)
        if isinstance(self.init, str) and self.init == "random":
            return X[torch.from_numpy(rng.choice(N, K, replace=False))].clone()
        if isinstance(self.init, str) and self.init == "k-means++":
            n = min(N, max(int(self.init_sample_size or max(20 * K, 10_000)), K))
            S = X[torch.from_numpy(np.sort(rng.choice(N, n, replace=False)))] if n < N else X
            return S[kmeans_plusplus(S, K, rng, pool)].clone()
        C = np.asarray(self.init, dtype=np.float64)
        if C.shape != (K, D):
            raise ValueError(f"explicit init must have shape (n_clusters, D) = {(K, D)}, got {C.shape}")
        return torch.from_numpy((C - mean).astype(np.float32))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Z, y=None) -> "KMeans":
        """Learn K centroids from ``Z`` (N, D) float32; returns ``self``."""
        Z = self._validate_latents(Z, reset=True)
        N, D = Z.shape
        K = int(self.n_clusters)
        self._check_n_samples(N)
        rng = np.random.default_rng(self.random_state)
        mean = Z.mean(0, dtype=np.float64)
        X = torch.from_numpy(Z - mean.astype(np.float32))
        with RowPool() as pool:
            C = self._initial_centroids(X, mean, rng, pool)
            state = _Lloyd(X, C, self.chunk_size, pool)
            tol = float(self.tol) * state.x_total / Z.size  # X is centred: mean per-feature variance
            self.inertia_history_, self.n_reseeded_ = [], 0
            converged = False
            for it in range(int(self.max_iter)):
                report("k-means iterations", it, int(self.max_iter))  # the total is the cap: a converged fit ends early
                changed = state.reassign(C, pool)
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
            report("k-means iterations", self.n_iter_, self.n_iter_)
            if converged:
                self.inertia_ = self.inertia_history_[-1]
            else:  # labels must refer to the final centroids
                state.reassign(C, pool)
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
        vars(self).update({key + "_": value for key, value in info.items() if value is not None and key in ("n_iter", "n_reseeded", "inertia")})
