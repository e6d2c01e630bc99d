"""k-nearest neighbours in Euclidean space: exact (blocked matmul + thresholded top-k) and HNSW.

Exact search computes (rows, cols) blocks of squared distances with one matmul on augmented
vectors [x, ||x||^2, 1] . [-2 y, 1, ||y||^2] (no separate pass adds the norms) and never
sorts a block. Each row keeps a threshold, an upper bound on its k-th smallest distance;
only block entries below it are candidates, and the work is arranged so that few are:

* points are ordered by a coarse k-means (one cluster per block or so), so a block holds
  nearby points, and block pairs are visited nearest first (by block means). The first
  block of a row sets its threshold to the k-th smallest of its group minima (k disjoint
  groups each hold an entry at most that large); by the time far blocks come, thresholds
  are close to the final k-th distances and those blocks yield almost nothing;
* a vectorised ``amin`` over strided groups of GROUP columns (for the transposed side, of
  GROUP rows) finds the few groups holding a candidate, so compares and ``nonzero`` run on
  1/GROUP of the block;
* candidates go to a per-row buffer; a row whose buffer would overflow is merged into its
  running top-k with one ``topk`` over (k + buffer) values, which tightens its threshold.

``knn_exact`` (all points against each other) uses symmetry: block (I, J) serves rows I
and rows J, so only half the matmuls run. The order changes only speed: results are exact
up to float32 rounding of the matmul form (relative ~1e-6 of ||x||^2 + ||y||^2), and
distances below a tenth of sqrt(||x||^2 + ||y||^2) (centred) are recomputed as ||x - y||.

``knn_query`` (many queries against fitted points: a geodesic codebook assigning millions of
tokens) keeps no per-row buffers: blocks are k-means cells, each block's distances are
reduced to strided-group minima as soon as they are computed, the k groups with the smallest
minima hold the k nearest points, and blocks that a chunk's bounding box shows to be too far
are never multiplied. Its candidates are ranked, and its distances computed, as ||q - x||
(:func:`knn_query`).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from posthoc_vq.progress import report
from posthoc_vq.quantize.latent.base import as_latents
from posthoc_vq.quantize.latent.rowpool import RowPool

GROUP = 16
BLOCK = 2048  # points per block: a 16 MiB float32 block stays in L3 while it is scanned
QUERY_FIT_BLOCK = 1024  # knn_query: fitted points per k-means cell, on average (a cell is the unit of skipping)
QUERY_CHUNK = 256  # knn_query: queries per chunk, the columns of each block's matmul (sgemm is fastest at <= 512 with a 10-wide inner dimension)
SUBCELLS = 8  # knn_query: queries are ordered within a cell by a k-means this many times finer
FIRST_BLOCKS = 2  # knn_query: blocks every chunk scans before it bounds its k-th distances
CHUNKS_PER_PIECE = 16  # knn_query: chunks per piece of work of one thread (RowPool)
BOUND_SLACK = 1e-5  # knn_query's skip margin, relative to ||q||^2 + ||x||^2: above float32 rounding of the matmul form
INF = float("inf")
_NONE = (torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), torch.empty(0))


class _RunningTopK:
    """The k smallest (value, index) pairs of each of n rows, fed by candidate batches."""

    def __init__(self, n: int, k: int):
        self.k, self.cap = k, 2 * k
        self.vals = torch.full((n, k), INF)
        self.idx = torch.full((n, k), -1, dtype=torch.int64)
        self.tau = torch.full((n,), INF)  # k-th smallest so far: only entries below it matter
        self.buf_v = torch.full((n, self.cap), INF)
        self.buf_i = torch.zeros(n, self.cap, dtype=torch.int64)
        self.fill = torch.zeros(n, dtype=torch.int64)

    def push(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> None:
        """Add candidates (value ``vals`` of neighbour ``cols`` for row ``rows``, sorted ascending)."""
        if len(rows) == 0:
            return
        uniq, counts = torch.unique_consecutive(rows, return_counts=True)
        seg = torch.repeat_interleave(torch.arange(len(uniq)), counts)
        pos = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[seg]  # rank within its row
        over = self.fill[uniq] + counts > self.cap
        if over.any():  # merge those rows now, together with this batch's candidates for them
            sel = over[seg]
            extra_v = torch.full((int(over.sum()), int(counts[over].max())), INF)
            extra_i = torch.zeros(extra_v.shape, dtype=torch.int64)
            slot = torch.cumsum(over, 0)[seg[sel]] - 1
            extra_v[slot, pos[sel]] = vals[sel]
            extra_i[slot, pos[sel]] = cols[sel]
            self.merge(uniq[over], extra_v, extra_i)
            keep = ~sel
            rows, cols, vals, pos = rows[keep], cols[keep], vals[keep], pos[keep]
        where = self.fill[rows] + pos
        self.buf_v[rows, where] = vals
        self.buf_i[rows, where] = cols
        self.fill.index_add_(0, rows, torch.ones_like(rows))

    def merge(self, rows: torch.Tensor, extra_v: torch.Tensor | None = None, extra_i: torch.Tensor | None = None) -> None:
        """Fold the buffers of ``rows`` (and extra (len(rows), c) candidates) into their top-k."""
        V = [self.vals[rows], self.buf_v[rows]] + ([extra_v] if extra_v is not None else [])
        I = [self.idx[rows], self.buf_i[rows]] + ([extra_i] if extra_i is not None else [])
        v, p = torch.cat(V, 1).topk(self.k, 1, largest=False, sorted=False)
        self.vals[rows] = v
        self.idx[rows] = torch.cat(I, 1).gather(1, p)
        self.tau[rows] = v.amax(1)
        self.buf_v[rows] = INF
        self.fill[rows] = 0

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, k) squared-distance values and neighbour indices, buffers merged."""
        self.merge((self.fill > 0).nonzero().squeeze(1))
        return self.vals, self.idx


def _row_candidates(B: torch.Tensor, tau: torch.Tensor, row0: int, col0: int) -> tuple[torch.Tensor, ...]:
    """Entries B[i, j] < tau[i] of block ``B`` (m, n), n a multiple of GROUP, via the minima of
    column groups {w, w + W, ...}: (row0 + i, col0 + j, value)."""
    W = B.shape[1] // GROUP
    B3 = B.view(B.shape[0], GROUP, W)
    hit = B3.amin(1) < tau.unsqueeze(1)
    if not hit.any():  # far blocks: skip the nonzero and gathers
        return _NONE
    r, w = hit.nonzero(as_tuple=True)
    v = B3[r, :, w]  # (hits, GROUP)
    e, t = (v < tau[r].unsqueeze(1)).nonzero(as_tuple=True)
    return row0 + r[e], col0 + t * W + w[e], v[e, t]


def _col_candidates(B: torch.Tensor, gmin: torch.Tensor, tau: torch.Tensor, row0: int, col0: int) -> tuple[torch.Tensor, ...]:
    """The transposed side of :func:`_row_candidates`: entries B[i, j] < tau[j] of block ``B``
    (m, n), found through ``gmin`` (m / GROUP, n), the minima of row groups {w, w + W, ...}:
    (col0 + j, row0 + i, value)."""
    W = gmin.shape[0]
    hit = gmin < tau.unsqueeze(0)
    if not hit.any():
        return _NONE
    c, w = hit.T.nonzero(as_tuple=True)
    v = B.view(GROUP, W, B.shape[1])[:, w, c].T  # (hits, GROUP)
    e, t = (v < tau[c].unsqueeze(1)).nonzero(as_tuple=True)
    return col0 + c[e], row0 + t * W + w[e], v[e, t]


def _first_threshold(B: torch.Tensor, k: int) -> torch.Tensor:
    """(m,) upper bound on each row's k-th smallest entry of ``B``: the k-th smallest of its
    group minima, nudged up so that a strict comparison keeps the entry equal to it."""
    W = B.shape[1] // GROUP
    if W < k:
        return torch.full((B.shape[0],), INF)
    g = B.view(B.shape[0], GROUP, W).amin(1)
    return torch.nextafter(g.kthvalue(k, 1).values, torch.tensor(INF))


def _augment(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left [x, |x|^2, 1] and right [-2x, 1, |x|^2] forms of ``X`` (N, D), padded to a
    multiple of GROUP rows whose entries are +inf (0 * inf never occurs)."""
    N, D = X.shape
    n = (X * X).sum(1)
    Np = -(-N // GROUP) * GROUP
    L = torch.zeros(Np, D + 2)
    R = torch.zeros(Np, D + 2)
    L[:N, :D], L[:N, D], L[N:, D], L[:, D + 1] = X, n, INF, 1.0
    R[:N, :D], R[:, D], R[:N, D + 1], R[N:, D + 1] = -2.0 * X, 1.0, n, INF
    return L, R


def _cells(X: torch.Tensor, n_groups: int, *points: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Nearest of ``n_groups`` coarse k-means centroids, fitted on up to 256 points per centroid
    of ``X``, for each row of each of ``points``: int64 labels, one tensor per array."""
    from posthoc_vq.quantize.latent.kmeans import KMeans, assign  # kmeans does not import knn

    n_groups = max(1, min(n_groups, len(X)))
    sample = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))[: 256 * n_groups]
    km = KMeans(n_groups, max_iter=8, tol=1e-3, random_state=0).fit(X[sample].numpy())
    C = torch.from_numpy(km.codebook_)
    return tuple(assign(P, C)[0] for P in points)


def _spatial_order(X: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Order grouping nearby points: ``X`` sorted by its :func:`_cells`."""
    return torch.sort(_cells(X, n_groups, X)[0], stable=True)[1]


def _block_order(row_means: torch.Tensor, col_means: torch.Tensor | None = None) -> list[tuple[int, int]]:
    """Block pairs (I, J), nearest block means first: all pairs, or I < J without ``col_means`` (symmetric)."""
    d = torch.cdist(row_means, row_means if col_means is None else col_means)
    if col_means is None:
        I, J = torch.triu_indices(len(d), len(d), 1)
    else:
        I, J = torch.cartesian_prod(torch.arange(d.shape[0]), torch.arange(d.shape[1])).view(-1, 2).T
    order = torch.argsort(d[I, J], stable=True)
    return list(zip(I[order].tolist(), J[order].tolist()))


def _finish(Xq: torch.Tensor, Xdb: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of the found neighbours, rows sorted ascending.

    From the matmul values, except where they are small against the norms (there the
    float32 form loses relative accuracy): those pairs are recomputed as ||q - x||.
    """
    nq, nx = (Xq * Xq).sum(1), (Xdb * Xdb).sum(1)
    sq = vals.clamp(min=0.0)
    r, c = (sq < 1e-2 * (nq.unsqueeze(1) + nx[idx])).nonzero(as_tuple=True)
    sq[r, c] = (Xq[r] - Xdb[idx[r, c]]).square_().sum(1)
    dist, p = sq.sqrt_().sort(dim=1, stable=True)
    return dist.numpy(), idx.gather(1, p).numpy()


def _blocks(N: int, chunk_size: int | None) -> tuple[int, int]:
    b = -(-(chunk_size or BLOCK) // GROUP) * GROUP
    return b, -(-N // b)


def knn_exact(Z, k: int, *, exclude_self: bool = True, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every point among all points.

    Parameters
    ----------
    Z : (N, D) float32 points.
    k : neighbours per point; k <= N - 1 with ``exclude_self``, else k <= N.
    exclude_self : drop index i from row i (only i itself: duplicates of i are kept, at distance 0).
    chunk_size : points per block (rounded up to a multiple of 16; default 2048).

    Returns
    -------
    distances : (N, k) float32 Euclidean distances (not squared), each row ascending.
    indices : (N, k) int64 neighbour indices.
    """
    Z = as_latents(Z)
    N = len(Z)
    if not 1 <= k <= N - int(exclude_self):
        raise ValueError(f"k must lie in [1, {N - int(exclude_self)}] for N={N} points (exclude_self={exclude_self}), got {k}")
    b, nb = _blocks(N, chunk_size)
    X = torch.from_numpy(Z - Z.mean(0, dtype=np.float64).astype(np.float32))
    order = _spatial_order(X, nb)
    X = X[order]
    L, R = _augment(X)
    top = _RunningTopK(len(L), k)
    pairs = _block_order(torch.stack([X[s : s + b].mean(0) for s in range(0, N, b)]))
    n_diag = -(-len(L) // b)
    n_blocks = n_diag + len(pairs)  # the diagonal blocks, then every pair I < J
    for s in range(0, len(L), b):  # diagonal blocks first: every row gets a threshold
        B = L[s : s + b] @ R[s : s + b].T
        if exclude_self:
            B.diagonal().fill_(INF)
        top.tau[s : s + b] = _first_threshold(B, k)
        top.push(*_row_candidates(B, top.tau[s : s + b], s, s))
        report("kNN graph blocks", s // b + 1, n_blocks)
    for n, (I, J) in enumerate(pairs, n_diag + 1):  # block (I, J) serves rows I and, transposed, rows J
        i, j = I * b, J * b
        B = L[i : i + b] @ R[j : j + b].T
        tau_r = top.tau[i : i + b]
        gmin = B.view(GROUP, len(B) // GROUP, B.shape[1]).amin(0)  # vertical, vectorised
        top.push(*_col_candidates(B, gmin, top.tau[j : j + b], i, j))
        # the row side needs its own pass over B, unless no row group can hold a candidate
        if (gmin.amin(1) < tau_r.view(GROUP, -1).amax(0)).any():
            top.push(*_row_candidates(B, tau_r, i, j))
        report("kNN graph blocks", n, n_blocks)
    vals, idx = top.result()
    dist, idx = _finish(X, X, vals[:N], idx[:N])
    out_d, out_i = np.empty_like(dist), np.empty_like(idx)
    perm = order.numpy()
    out_d[perm], out_i[perm] = dist, perm[idx]  # back to the caller's numbering
    return out_d, out_i


def knn_query(Z_fit, Q, k: int, *, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest fitted points of each query (no exclusion).

    Fitted points and queries are split into the cells of a coarse k-means (about
    ``chunk_size`` fitted points per cell): a cell of fitted points is a block, and the
    queries of a cell, ordered by a k-means SUBCELLS times finer (so that a chunk covers a
    small part of its cell), go in chunks of at most QUERY_CHUNK. Each (block, chunk) matmul of
    augmented vectors gives squared distances in (block, chunk) layout (QUERY_CHUNK columns:
    the shape sgemm runs fastest on with an inner dimension of D + 2), reduced at once, in
    cache, to minima over groups of GROUP strided rows of the block. The k nearest points
    lie in the k groups with the smallest minima (k groups below a point's distance would
    give k nearer points), so only those k * GROUP candidates are kept, and ranked by
    ||q - x|| computed from the differences. A chunk first scans its FIRST_BLOCKS nearest
    blocks; the k-th smallest group minimum there bounds each query's k-th distance from
    above, and a block whose bounding box lies farther from the chunk's box than every
    query's bound (less a margin for float32 rounding) is never multiplied.

    Parameters
    ----------
    Z_fit : (N, D) float32 fitted points.
    Q : (M, D) float32 queries.
    k : neighbours per query, k <= N.
    chunk_size : fitted points per cell, on average (default QUERY_FIT_BLOCK).

    Returns
    -------
    distances : (M, k) float32 Euclidean distances, rows ascending; indices : (M, k) int64 into Z_fit.
    """
    Z_fit = as_latents(Z_fit, name="Z_fit")
    Q = as_latents(Q, Z_fit.shape[1], name="Q")
    N = len(Z_fit)
    if not 1 <= k <= N:
        raise ValueError(f"k must lie in [1, {N}] for N={N} fitted points, got {k}")
    if len(Q) == 0:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    mean = Z_fit.mean(0, dtype=np.float64).astype(np.float32)
    X, Xq = torch.from_numpy(Z_fit - mean), torch.from_numpy(Q - mean)
    n_cells = -(-N // (chunk_size or QUERY_FIT_BLOCK))
    cell, q_cell = _cells(X, n_cells, X, Xq)
    (q_sub,) = _cells(X, n_cells * SUBCELLS, Xq)  # a finer order of the queries inside each cell: compact chunks
    order, q_order = torch.sort(cell, stable=True)[1], torch.sort(q_cell * n_cells * SUBCELLS + q_sub, stable=True)[1]
    blocks = _FittedBlocks(X[order], torch.bincount(cell, minlength=n_cells))
    Xq = Xq[q_order]
    q_ends = torch.bincount(q_cell, minlength=n_cells).cumsum(0).tolist()
    chunks = [(s, min(s + QUERY_CHUNK, e)) for c, e in zip([0] + q_ends[:-1], q_ends) for s in range(c, e, QUERY_CHUNK)]
    sq, idx = torch.empty(len(Q), k), torch.empty(len(Q), k, dtype=torch.int64)

    def run(a: int, b: int) -> None:  # chunks a..b, on one thread (rows of different chunks never overlap)
        for s, e in chunks[a:b]:
            sq[s:e], idx[s:e] = blocks.nearest(Xq[s:e], k)

    step = CHUNKS_PER_PIECE * 8
    with RowPool() as pool:  # chunk groups on Python threads with single-threaded torch: its ops are small
        for a in range(0, len(chunks), step):
            b = min(a + step, len(chunks))
            pool.map(lambda s, e, a=a: run(a + s, a + e), b - a, CHUNKS_PER_PIECE)
            report("kNN query blocks", b, len(chunks))  # from this thread: progress callbacks are this thread's
    dist, p = sq.sqrt_().sort(dim=1, stable=True)
    out_d, out_i = np.empty((len(Q), k), np.float32), np.empty((len(Q), k), np.int64)
    out_d[q_order.numpy()], out_i[q_order.numpy()] = dist.numpy(), order.numpy()[idx.gather(1, p).numpy()]
    return out_d, out_i


class _FittedBlocks:
    """Fitted points ``X`` (N, D) in blocks of consecutive rows (``sizes`` (n,) of them;
    empty blocks are dropped), searched chunk by chunk of queries.

    Each block is padded to a multiple of GROUP rows with points at infinity; group w of a
    block of P padded rows holds its rows w + t * P / GROUP, t < GROUP.
    """

    def __init__(self, X: torch.Tensor, sizes: torch.Tensor):
        ends = sizes.cumsum(0).tolist()
        parts = [(s, e) for s, e in zip([0] + ends[:-1], ends) if e > s]
        padded = [-(-(e - s) // GROUP) * GROUP for s, e in parts]
        self.X = torch.cat([torch.cat([X[s:e], torch.full((p - (e - s), X.shape[1]), INF)]) for (s, e), p in zip(parts, padded)])
        real = torch.cat([torch.cat([torch.arange(s, e), torch.full((p - (e - s),), -1)]) for (s, e), p in zip(parts, padded)])
        finite = torch.where(real.unsqueeze(1) >= 0, self.X, 0.0)
        norm = torch.where(real >= 0, (finite * finite).sum(1), INF)
        self.R = torch.cat([-2.0 * finite, torch.ones(len(finite), 1), norm.unsqueeze(1)], 1)  # as _augment's right form
        self.real = real  # padded row -> row of X, -1 on padding
        self.lo = torch.stack([X[s:e].amin(0) for s, e in parts])
        self.hi = torch.stack([X[s:e].amax(0) for s, e in parts])
        self.norm = torch.maximum(self.lo.abs(), self.hi.abs()).square().sum(1)  # >= ||x||^2 in the block
        self.start = torch.tensor([0] + padded).cumsum(0)[:-1]  # first padded row of each block
        self.width = torch.tensor(padded) // GROUP  # groups per block
        self.first_group = torch.cat([torch.zeros(1, dtype=torch.int64), self.width.cumsum(0)[:-1]])
        block_of = torch.repeat_interleave(torch.arange(len(parts)), self.width)
        local = torch.arange(int(self.width.sum())) - self.first_group[block_of]
        self.members = (self.start[block_of] + local).unsqueeze(1) + self.width[block_of].unsqueeze(1) * torch.arange(GROUP)

    def _group_minima(self, J: int, L: torch.Tensor) -> torch.Tensor:
        """(width[J], m) minima of block J's squared distances (matmul form) over its groups."""
        s, w = int(self.start[J]), int(self.width[J])
        return (self.R[s : s + w * GROUP] @ L.T).view(GROUP, w, len(L)).amin(0)

    def nearest(self, Xq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances (m, k) and rows of X (m, k) of the k nearest fitted points of the queries ``Xq`` (m, D)."""
        m, D = Xq.shape
        L = _augment(Xq)[0][:m]
        gap = ((self.lo - Xq.amax(0)).clamp(min=0) + (Xq.amin(0) - self.hi).clamp(min=0)).square_().sum(1)
        below = gap - BOUND_SLACK * (L[:, D].max() + self.norm)  # under every squared distance of chunk to block
        visit = torch.argsort(gap, stable=True)
        enough = int(torch.searchsorted(self.width[visit].cumsum(0), k)) + 1  # blocks holding >= k groups
        computed = visit[: max(FIRST_BLOCKS, enough)].tolist()
        minima = [self._group_minima(J, L) for J in computed]
        if enough <= len(computed):  # the first blocks hold k groups: the k-th minimum bounds the k-th distance
            bound = float(np.partition(torch.cat(minima).numpy(), k - 1, axis=0)[k - 1].max())
            rest = [J for J in visit[len(computed) :].tolist() if below[J] < bound]
            minima += [self._group_minima(J, L) for J in rest]
            computed += rest
        group = torch.cat([self.first_group[J] + torch.arange(int(self.width[J])) for J in computed])
        chosen = group[_smallest(torch.cat(minima).T.contiguous(), min(k, len(group)))]  # (m, k) group ids
        cand = self.members.index_select(0, chosen.view(-1)).view(m, -1)
        near = self.X.index_select(0, cand.view(-1)).view(m, cand.shape[1], D)
        sq = (near - Xq.unsqueeze(1)).square_().sum(2).nan_to_num_(nan=INF)  # inf - inf on padding rows
        p = _smallest(sq, k)
        return sq.gather(1, p), self.real[cand.gather(1, p)]


def _smallest(V: torch.Tensor, k: int) -> torch.Tensor:
    """(m, k) column indices of the k smallest entries of each row of ``V`` (m, n), in no order
    (numpy's introselect: several times faster than ``torch.topk`` on CPU)."""
    if k == V.shape[1]:
        return torch.arange(k).repeat(len(V), 1)
    return torch.from_numpy(np.ascontiguousarray(np.argpartition(V.numpy(), k - 1, axis=1)[:, :k]))


def knn_hnsw(Z, k: int, *, M: int = 32, ef_construction: int = 200, ef_search: int = 128, random_state: int = 0, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest neighbours of every point with faiss's HNSW graph (IndexHNSWFlat).

    Same output convention as :func:`knn_exact`; missing neighbours (tiny N) are index -1 at
    distance inf. ``random_state`` fixes the insertion order; with more than one OpenMP
    thread faiss builds the graph in a thread-dependent order, so results can vary slightly.
    ``ef_search`` is raised to at least k + 1.
    """
    Z = as_latents(Z)
    N, D = Z.shape
    if not 1 <= k <= N - int(exclude_self):
        raise ValueError(f"k must lie in [1, {N - int(exclude_self)}] for N={N} points (exclude_self={exclude_self}), got {k}")
    order = np.random.default_rng(random_state).permutation(N)
    index = faiss.IndexHNSWFlat(D, M)
    index.hnsw.efConstruction = ef_construction
    index.add(np.ascontiguousarray(Z[order]))
    index.hnsw.efSearch = max(ef_search, k + 1)
    extra = int(exclude_self)
    sq, I = index.search(Z, k + extra)
    I = np.where(I >= 0, order[np.maximum(I, 0)], -1)
    sq = np.where(I >= 0, sq, np.inf)
    if exclude_self:  # drop i from row i, or the farthest result where i was not found
        self_pos = np.where((I == np.arange(N)[:, None]).any(1), (I == np.arange(N)[:, None]).argmax(1), k)
        keep = np.arange(k + 1)[None, :] != self_pos[:, None]
        I, sq = I[keep].reshape(N, k), sq[keep].reshape(N, k)
    return np.sqrt(np.maximum(sq, 0)).astype(np.float32), I.astype(np.int64)


def knn_recall(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Mean over rows of the fraction of the exact neighbours (N, k) found in the approximate rows (N, k')."""
    approx_idx, exact_idx = np.asarray(approx_idx), np.asarray(exact_idx)
    if len(approx_idx) != len(exact_idx):
        raise ValueError(f"row counts differ: {len(approx_idx)} vs {len(exact_idx)}")
    n, k = exact_idx.shape
    base = max(int(approx_idx.max(initial=0)), int(exact_idx.max(initial=0))) + 2
    rows = np.arange(n)[:, None] * base
    found = np.isin(rows + exact_idx + 1, rows + approx_idx + 1)  # +1 keeps -1 (missing) in its own row
    return float(found.sum() / (n * k))
