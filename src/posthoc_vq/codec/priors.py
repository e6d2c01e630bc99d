"""Priors over code indices: the probability model that the entropy coder spends bits by.

Codes come as a grid ``(N, h, w, M)``: N images, an h x w grid of tokens (1 x 1 for one-vector
latents), M residual stages (1 for a single codebook). A prior holds ``probs`` (M, C, K): for
stage m and context c, a distribution over the K codes, every entry > 0 (an unseen code stays
codable). Kinds:

* ``uniform``: 1/K everywhere, one context: the nominal rate, log2 K bits per code.
* ``empirical``: each stage's code frequencies on the fit set, with ``floor`` (0.5, the
  Krichevsky-Trofimov estimator) added to every count.
* ``context``: for token grids, the code's distribution given the *groups* of its left and upper
  neighbours' codes at the same stage (a group per code, from clustering the stage's codebook
  into G groups; "none" at the grid's edge), so C = (G + 1)^2 contexts. Counts are smoothed
  towards the stage's empirical distribution: p(k | c) = (n(c, k) + alpha p(k)) / (n(c) + alpha),
  with alpha chosen per stage from :data:`ALPHAS` by the likelihood of a held-out tenth of the fit
  images (every tenth image), then refitted on all of them.

Coding order (what a decoder reproduces): context-free priors code stage by stage, each stage's
symbols image-major in raster order, one model per stage. The context prior codes position by
position (raster order), stage by stage within a position, and, at each (position, stage), the
images grouped by context (ascending) and in image order within a group: every context is known
to the decoder from positions it has already decoded. Coding is constriction's ANS (stack)
coder with its ``Categorical`` model (24-bit fixed-point probabilities); the ideal rate
(:meth:`Prior.ideal_bits`) is -log2 of the float probabilities.

numpy and constriction only: the torch-free runtime decodes with this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from posthoc_vq.codec import tensorfile

PRIOR_KINDS = ("uniform", "empirical", "context")
ALPHAS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
EMPIRICAL_FLOOR = 0.5
DEFAULT_GROUPS = 16
MAX_TABLE_CODES = 2**24  # a prior is a probability table over the codes: 128 MiB of float64 per stage at most


class PriorError(ValueError):
    """A prior that cannot code these codes (wrong K, stages, grid) or a damaged prior file."""


def _check_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 4:
        raise PriorError(f"codes must be a grid (N, h, w, M) of integer code indices, got shape {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise PriorError(f"codes must be integers, got dtype {codes.dtype}")
    return codes.astype(np.int64, copy=False)


@dataclass(eq=False)
class Prior:
    """A fitted prior: ``probs`` (M, C, K) float64 > 0 summing to 1 over K; ``groups`` (M, K) int32 for ``context``."""

    kind: str
    probs: np.ndarray
    groups: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise PriorError(f"unknown prior kind {self.kind!r}; one of {', '.join(PRIOR_KINDS)}")
        p = np.asarray(self.probs, dtype=np.float64)
        if p.ndim != 3 or not np.isfinite(p).all() or (p <= 0).any() or not np.allclose(p.sum(-1), 1.0, atol=1e-9):
            raise PriorError(f"{self.kind} prior: probs must be (M, C, K), finite, > 0 and sum to 1 over K (shape {p.shape})")
        self.probs = p
        if self.kind == "context":
            g = np.asarray(self.groups)
            if g.shape != (p.shape[0], p.shape[2]) or g.min() < 0 or (int(g.max()) + 2) ** 2 > p.shape[1]:
                raise PriorError(f"context prior: groups must be (M, K) = {(p.shape[0], p.shape[2])} with (G + 1)^2 <= contexts {p.shape[1]}")
            self.groups = g.astype(np.int32)

    @property
    def n_stages(self) -> int:
        return int(self.probs.shape[0])

    @property
    def n_codes(self) -> int:
        return int(self.probs.shape[2])

    @property
    def n_groups(self) -> int:
        return int(round(np.sqrt(self.probs.shape[1]))) - 1 if self.kind == "context" else 0

    # ------------------------------------------------------------------ persistence
    def tensors(self) -> dict[str, np.ndarray]:
        out = {"probs": self.probs}
        if self.groups is not None:
            out["groups"] = self.groups
        return out

    def to_bytes(self) -> bytes:
        """The prior as safetensors bytes (deterministic: same prior, same bytes)."""
        meta = {"kind": self.kind, **{k: str(v) for k, v in self.info.items()}}
        return tensorfile.encode(self.tensors(), meta)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "prior") -> "Prior":
        try:
            tensors, meta = tensorfile.decode(data, what)
        except tensorfile.TensorFileError as err:
            raise PriorError(str(err)) from err
        kind = meta.pop("kind", None)
        if kind not in PRIOR_KINDS or "probs" not in tensors:
            raise PriorError(f"{what}: not a prior file (kind {kind!r}, tensors {sorted(tensors)})")
        return cls(kind, tensors["probs"], tensors.get("groups"), meta)

    # ------------------------------------------------------------------ contexts and rates
    def check(self, codes: np.ndarray) -> np.ndarray:
        codes = _check_codes(codes)
        if codes.shape[3] != self.n_stages:
            raise PriorError(f"codes have {codes.shape[3]} stage(s) but the {self.kind} prior was fitted for {self.n_stages}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_codes):
            raise PriorError(f"code indices must lie in [0, {self.n_codes}), got [{codes.min()}, {codes.max()}]")
        return codes

    def contexts(self, codes: np.ndarray) -> np.ndarray:
        """(N, h, w, M) context of every code: 0 for context-free priors; (group left) * (G + 1) + (group up) otherwise."""
        codes = _check_codes(codes)
        if self.kind != "context":
            return np.zeros(codes.shape, dtype=np.int64)
        return _context_grid(codes, self.groups, self.n_groups)

    def ideal_bits(self, codes: np.ndarray) -> np.ndarray:
        """(N,) -log2 p of each image's codes under this prior: the ideal rate, before coding."""
        codes = self.check(codes)
        ctx = self.contexts(codes)
        m = np.broadcast_to(np.arange(self.n_stages), codes.shape)
        return -np.log2(self.probs[m, ctx, codes]).reshape(len(codes), -1).sum(1)

    def min_bits_per_code(self) -> float:
        """The fewest bits any one code can cost (bounds how many codes a payload can hold)."""
        return float(-np.log2(self.probs.max()))

    # ------------------------------------------------------------------ coding
    @cached_property
    def _models(self) -> list[list[object]]:
        import constriction

        Categorical = constriction.stream.model.Categorical
        return [[Categorical(row, perfect=False) for row in stage] for stage in self.probs]

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """uint32 ANS words of ``codes`` (N, h, w, M), in the order of the module docstring."""
        import constriction

        codes = self.check(codes)
        coder = constriction.stream.stack.AnsCoder()
        chunks = list(self._chunks(codes))
        for symbols, model in reversed(chunks):  # a stack: the last chunk decoded is pushed first
            coder.encode_reverse(symbols, model)
        return np.asarray(coder.get_compressed(), dtype=np.uint32)

    def _chunks(self, codes: np.ndarray):
        n, h, w, n_stages = codes.shape
        if n == 0:
            return
        if self.kind != "context":
            for m in range(n_stages):
                yield np.ascontiguousarray(codes[..., m].reshape(-1), dtype=np.int32), self._models[m][0]
            return
        ctx = _context_grid(codes, self.groups, self.n_groups)
        for r in range(h):
            for c in range(w):
                for m in range(n_stages):
                    for u, idx in _by_context(ctx[:, r, c, m]):
                        yield codes[idx, r, c, m].astype(np.int32), self._models[m][u]

    def decode(self, words: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        """Codes (N, h, w, M) from the ANS words; raises :class:`PriorError` if the words do not hold exactly them."""
        import constriction

        words = np.ascontiguousarray(words, dtype=np.uint32)
        n_symbols = n * h * w * self.n_stages
        if n_symbols * self.min_bits_per_code() > 32 * len(words) + 64:
            raise PriorError(f"the payload ({len(words) * 4} bytes) is too short to hold {n_symbols} codes under this prior (truncated?)")
        out = np.empty((n, h, w, self.n_stages), dtype=np.int64)
        if n_symbols == 0:
            return out
        coder = constriction.stream.stack.AnsCoder(words)
        try:
            if self.kind != "context":
                for m in range(self.n_stages):
                    out[..., m] = np.asarray(coder.decode(self._models[m][0], n * h * w)).reshape(n, h, w)
            else:
                _decode_context(coder, self, out)
        except Exception as err:  # constriction raises on an exhausted or invalid stream
            raise PriorError(f"the payload does not decode under this prior ({err})") from err
        if not coder.is_empty():
            raise PriorError("the payload holds more than the header's codes (damaged, or made with another prior)")
        return out


def _by_context(ctx: np.ndarray):
    """(context, indices) for each context present in ``ctx`` (N,), contexts ascending, indices ascending."""
    order = np.argsort(ctx, kind="stable")
    values, starts = np.unique(ctx[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for u, s, e in zip(values.tolist(), starts.tolist(), ends.tolist()):
        yield u, order[s:e]


def _context_grid(codes: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    none = n_groups
    g = np.stack([groups[m][codes[..., m]] for m in range(codes.shape[3])], -1) if codes.size else np.zeros(codes.shape, dtype=np.int64)
    left = np.full(codes.shape, none, dtype=np.int64)
    up = np.full(codes.shape, none, dtype=np.int64)
    left[:, :, 1:] = g[:, :, :-1]
    up[:, 1:] = g[:, :-1]
    return left * (n_groups + 1) + up


def _decode_context(coder, prior: Prior, out: np.ndarray) -> None:
    n, h, w, n_stages = out.shape
    groups = prior.groups.astype(np.int64)
    none = prior.n_groups
    for r in range(h):
        for c in range(w):
            for m in range(n_stages):
                left = groups[m][out[:, r, c - 1, m]] if c > 0 else np.full(n, none)
                up = groups[m][out[:, r - 1, c, m]] if r > 0 else np.full(n, none)
                for u, idx in _by_context(left * (none + 1) + up):
                    out[idx, r, c, m] = np.asarray(coder.decode(prior._models[m][u], len(idx)))


# ---------------------------------------------------------------------- fitting
def _check_table(n_codes: int) -> None:
    if n_codes > MAX_TABLE_CODES:
        raise PriorError(f"{n_codes} codes (2^{np.log2(n_codes):.0f}) are too many for a probability table (at most 2^24); "
                         "a quantizer this wide has no prior, and its rate is the nominal one")


def uniform_prior(n_codes: int, n_stages: int = 1) -> Prior:
    _check_table(n_codes)
    return Prior("uniform", np.full((n_stages, 1, n_codes), 1.0 / n_codes), info={"n_codes": n_codes})


def _stage_counts(codes: np.ndarray, n_codes: int) -> np.ndarray:
    return np.stack([np.bincount(codes[..., m].reshape(-1), minlength=n_codes) for m in range(codes.shape[3])]).astype(np.float64)


def empirical_prior(codes: np.ndarray, n_codes: int, floor: float = EMPIRICAL_FLOOR) -> Prior:
    """Each stage's code frequencies in ``codes`` (N, h, w, M), ``floor`` added to every count."""
    codes = _check_codes(codes)
    _check_table(n_codes)
    counts = _stage_counts(codes, n_codes) + floor
    return Prior("empirical", (counts / counts.sum(1, keepdims=True))[:, None, :], info={"floor": floor, "n_fit_codes": int(codes.size)})


def context_prior(codes: np.ndarray, n_codes: int, groups: np.ndarray, alphas: tuple[float, ...] = ALPHAS) -> Prior:
    """The context prior of the module docstring, fitted on ``codes`` (N, h, w, M) with code groups (M, K)."""
    codes = _check_codes(codes)
    groups = np.asarray(groups, dtype=np.int64)
    if codes.shape[1] * codes.shape[2] < 2:
        raise PriorError("a context prior needs a token grid (h x w > 1); one-vector latents have no neighbours: use the empirical prior")
    n_groups = int(groups.max()) + 1
    held = np.arange(len(codes)) % 10 == 9
    chosen = []
    for m in range(codes.shape[3]):
        train, test = codes[~held][..., m : m + 1], codes[held][..., m : m + 1]
        if len(test) == 0 or len(train) == 0:
            chosen.append(alphas[len(alphas) // 2])
            continue
        table = _context_counts(train, groups[m : m + 1], n_codes, n_groups)[0]
        base = _stage_counts(train, n_codes)[0] + EMPIRICAL_FLOOR
        base /= base.sum()
        ctx, sym = _context_grid(test, groups[m : m + 1], n_groups).reshape(-1), test.reshape(-1)
        rows, hits = table.sum(1)[ctx], table[ctx, sym]  # (n,) each: never an (n, K) array (K = 65,536 at photo scale)
        ll = [np.log((hits + a * base[sym]) / (rows + a)).sum() for a in alphas]
        chosen.append(alphas[int(np.argmax(ll))])
    table = _context_counts(codes, groups, n_codes, n_groups)
    base = _stage_counts(codes, n_codes) + EMPIRICAL_FLOOR
    base /= base.sum(1, keepdims=True)
    a = np.asarray(chosen)[:, None, None]
    probs = (table + a * base[:, None, :]) / (table.sum(2, keepdims=True) + a)
    return Prior("context", probs, groups.astype(np.int32),
                 info={"alpha": ",".join(f"{x:g}" for x in chosen), "n_groups": n_groups, "n_fit_codes": int(codes.size)})


def _context_counts(codes: np.ndarray, groups: np.ndarray, n_codes: int, n_groups: int) -> np.ndarray:
    n_ctx = (n_groups + 1) ** 2
    ctx = _context_grid(codes, groups, n_groups)
    return np.stack([
        np.bincount(ctx[..., m].reshape(-1) * n_codes + codes[..., m].reshape(-1), minlength=n_ctx * n_codes).reshape(n_ctx, n_codes)
        for m in range(codes.shape[3])
    ]).astype(np.float64)
