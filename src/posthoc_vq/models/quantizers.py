"""Quantizers trained jointly with the model (a VQ-VAE bottleneck): VQ, residual VQ and FSQ.

The layers are vector-quantize-pytorch's (``VectorQuantize``, ``ResidualVQ``, ``FSQ``); each
kind is wrapped in one small module with one output, :class:`QuantizerOutput`. A latent is
one vector per image (B, D) or a grid (B, C, h, w); the quantizer works on tokens, (B, T, C)
with T = 1 or h * w in row-major grid order (the order of :func:`posthoc_vq.latents.to_tokens`),
and gives back latents of the input's shape.

* ``vq``: K codes, nearest code per token, straight-through gradients, commitment loss
  ``commitment * ||z_e - sg(z_q)||^2``, codebook learned by EMA (``ema_decay``), k-means on the
  first training batch, and a code whose EMA cluster size drops below ``dead_code_threshold``
  times the uniform share (vectors per batch / K) is restarted from a vector of the batch, at
  that share. log2(K) bits per token.
* ``rvq``: M such stages, each quantizing the previous stages' residual; M * log2(K) bits.
* ``fsq``: each of len(levels) dimensions bounded by tanh and rounded to L_i levels (a linear
  projection maps D to len(levels) dimensions and back when they differ); no codebook, no
  auxiliary loss; log2(prod L_i) bits.

The codebooks are the library's (``Codebook`` modules with their buffers ``embed``, ``embed_avg``,
``cluster_size``, ``initted``, so the state dict has the library's layout and fixed shapes), and so
are k-means initialisation, the EMA smoothing and the dead-code restarts (``init_embed_``,
``update_ema``, ``expire_codes_``). The wrapper does three things itself, each measured or needed:

* the nearest-code search and the EMA statistics of a step (:func:`ema_step`: argmin, bincount,
  index_add, lerp). The library's training forward (einops/einx layouts, a one-hot einsum) took
  0.47 ms of a 7.2 ms digits step for VQ and 0.85 ms of 7.8 ms for a 2-stage RVQ, against 0.08 /
  0.14 ms for the lookup: the quantized trainer must keep 0.9x the continuous one's images/s.
  The result equals the library's forward: same codes, same buffers (tested against it).
* eval mode is a lookup that changes no state; the library's eval forward runs k-means on a
  codebook that was never initialised, and branches on that flag, which ``torch.export`` (ONNX)
  cannot trace.
* one straight-through step on the summed output: the library's residual VQ passes one through
  every stage, so the encoder would get M times the decoder's gradient (tested).

The dead-code threshold is relative, where the library's is an absolute count: with one vector
per image and small batches the share is about 1 (digits: 64 images, K = 64) or below (Fashion-MNIST:
256 images, K = 1024), so the usual absolute 2 restarted about 50 of 64 codes at every step
(1,040 restarts per digits epoch, validation reconstruction 2.34 against 1.97 after 15 epochs).

The commitment loss is ``commitment`` times the squared distance summed over one image's latent
values (per stage for rvq), averaged over the batch, like the reconstruction (summed over pixels);
the library's is a mean over values. FSQ's code indices are computed in int64 (the library's are
int32 and its index table has prod(levels) rows; 40 bits would not fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from posthoc_vq.config import VAEConfig
from posthoc_vq.nearest import nearest_code
from posthoc_vq.tokens import from_tokens, to_tokens

MAX_BINCOUNT_CODES = 2**16  # larger codebooks (big FSQ level sets) are counted by sorting the epoch's codes once


@dataclass
class QuantizerOutput:
    """What a trained quantizer's forward gives. ``latents`` and ``indices`` are the names every quantizer's output has
    (a post-hoc codebook's :class:`~posthoc_vq.quantize.latent.module.CodebookOutput` too)."""

    z_q: torch.Tensor  # (B, *L) quantized latents, the shape of the input; gradient reaches the input (straight-through)
    codes: torch.Tensor  # (B,) / (B, M) for one vector per image, (B, T) / (B, T, M) for a grid; int64
    aux_loss: torch.Tensor  # scalar: weighted commitment loss per image (0 for fsq)

    @property
    def latents(self) -> torch.Tensor:
        return self.z_q

    @property
    def indices(self) -> torch.Tensor:
        return self.codes


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward pass, the identity's gradient to ``x`` in the backward pass (``q`` itself when no gradient is tracked)."""
    return x + (q - x).detach() if torch.is_grad_enabled() and x.requires_grad else q


@torch.no_grad()
def ema_step(book: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of a library ``Codebook`` on vectors ``x`` (N, D), as its training forward does it.

    k-means init on the first call; nearest codes against the codebook before the step; EMA of cluster
    sizes and code sums (the library's decay); its Laplace-smoothed codebook update; dead-code restarts.
    Returns the codes (N,) int64 and their vectors (N, D) from the codebook before the step.
    """
    if not bool(book.initted):
        book.init_embed_(x[None])  # the library's k-means on this batch
    embed = book.embed[0]  # (K, D)
    codes = nearest_code(x, embed)
    q = embed[codes]  # a copy: the update below rewrites embed in place
    book.cluster_size[0].lerp_(torch.bincount(codes, minlength=embed.shape[0]).to(x.dtype), 1.0 - book.decay)
    book.embed_avg[0].lerp_(torch.zeros_like(embed).index_add_(0, codes, x), 1.0 - book.decay)
    book.update_ema()
    if book.has_dead_code_replacement:
        # the threshold is a fraction of the uniform share (vectors in the batch / K); a restarted code starts at that share
        share = x.shape[0] / embed.shape[0]
        book.threshold_ema_dead_code, book.reset_cluster_size = book.dead_code_fraction * share, share
        book.expire_codes_(x[None])  # codes whose EMA cluster size fell below the threshold take vectors of this batch
    return codes, q


class TrainedQuantizer(nn.Module):
    """Base of the wrappers: token layout, fp32 numerics, the named output."""

    kind = ""
    n_codes: int  # codes per stage (prod(levels) for fsq)
    n_stages: int = 1

    @property
    def bits_per_vector(self) -> float:
        """Bits of one token's code(s), exact: log2(K), M * log2(K), log2(prod(levels))."""
        raise NotImplementedError

    def codebook_numel(self) -> int:
        """Learned codebook values (K * D per stage; 0 for fsq): part of the model, though not gradient parameters."""
        return 0

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, *L) -> :class:`QuantizerOutput`. Training mode updates the codebooks (vq, rvq); eval mode changes nothing."""
        if z.ndim not in (2, 4):
            raise ValueError(f"latents must be (B, D) vectors or (B, C, h, w) grids, got shape {tuple(z.shape)}")
        tokens = to_tokens(z)  # (B, T, C)
        with torch.autocast(z.device.type, enabled=False):  # distances and rounding in fp32, also under bf16 autocast
            q, codes, aux = (self._train if self.training else self._lookup)(tokens.float())
        codes = codes[:, 0] if z.ndim == 2 else codes  # (B, [T,] [M])
        return QuantizerOutput(from_tokens(q, tuple(z.shape[1:])), codes, aux)

    @torch.no_grad()
    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """The quantized latents (B, *L) of z, without gradients or state changes, in any mode.

        Contiguous, as latents decoded from codes are (:meth:`~posthoc_vq.evaluation.bitstreams.RunCodec.images`): a
        convolution may take another kernel for a permuted layout, and the two decodes must be bit for bit the same."""
        with torch.autocast(z.device.type, enabled=False):
            return from_tokens(self._lookup(to_tokens(z).float())[0], tuple(z.shape[1:])).contiguous()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, C) of codes (B, T) (vq, fsq) or (B, T, M) (rvq): the way back from indices to latents,
        bit-identical to the vectors :meth:`lookup` gives for the same codes (bitstreams decode with it)."""
        raise NotImplementedError

    def _train(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._lookup(tokens)

    def _lookup(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """The quantizer's settings and rate, for results: kind, K or levels, stages, bits per token."""
        return {"kind": self.kind, "trained": True, "n_codes": self.n_codes, "stages": self.n_stages, "bits_per_token": self.bits_per_vector}


def _set_dead_code_fraction(module: nn.Module, fraction: float) -> None:
    """Give every library ``Codebook`` in ``module`` the relative dead-code threshold :func:`ema_step` applies."""
    for book in module.modules():
        if type(book).__name__ == "Codebook":
            book.dead_code_fraction = fraction


def _library_vq_kwargs(config: VAEConfig) -> dict:
    return dict(
        codebook_size=config.codebook_size, decay=config.ema_decay, commitment_weight=config.commitment, kmeans_init=config.kmeans_init,
        threshold_ema_dead_code=config.dead_code_threshold, rotation_trick=False,  # plain straight-through (the library's default is the rotation trick)
    )


class VQ(TrainedQuantizer):
    """One codebook of K codes (``vector_quantize_pytorch.VectorQuantize``'s), EMA-learned."""

    kind = "vq"

    def __init__(self, config: VAEConfig):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.n_codes, self.commitment = int(config.codebook_size), config.commitment
        self.vq = VectorQuantize(dim=config.latent_dim, **_library_vq_kwargs(config))
        _set_dead_code_fraction(self.vq, config.dead_code_threshold)

    @property
    def bits_per_vector(self) -> float:
        return math.log2(self.n_codes)

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) the codes."""
        return self.vq.codebook

    def codebook_numel(self) -> int:
        return self.codebook.numel()

    def _train(self, tokens):
        B, T, C = tokens.shape
        flat = tokens.reshape(-1, C)
        codes, q = ema_step(self.vq._codebook, flat.detach())
        return self._output(tokens, flat, codes, q)

    def _lookup(self, tokens):
        flat = tokens.reshape(-1, tokens.shape[-1])
        codes = nearest_code(flat, self.codebook)
        return self._output(tokens, flat, codes, self.codebook[codes])

    @torch.no_grad()
    def dequantize(self, codes):
        return self.codebook[codes]

    def _output(self, tokens, flat, codes, q):
        B, T, C = tokens.shape
        aux = self.commitment * (flat - q).pow(2).sum() / B
        return straight_through(tokens, q.view(B, T, C)), codes.view(B, T), aux


class RVQ(TrainedQuantizer):
    """M residual stages of K codes each (``vector_quantize_pytorch.ResidualVQ``'s), EMA-learned."""

    kind = "rvq"

    def __init__(self, config: VAEConfig):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        self.n_codes, self.n_stages, self.commitment = int(config.codebook_size), int(config.stages), config.commitment
        self.rvq = ResidualVQ(dim=config.latent_dim, num_quantizers=self.n_stages, **_library_vq_kwargs(config))
        _set_dead_code_fraction(self.rvq, config.dead_code_threshold)

    @property
    def bits_per_vector(self) -> float:
        return self.n_stages * math.log2(self.n_codes)

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """M tensors (K, D): each stage's codes."""
        return [layer.codebook for layer in self.rvq.layers]

    def codebook_numel(self) -> int:
        return sum(c.numel() for c in self.codebooks)

    def _train(self, tokens):
        return self._stages(tokens, lambda m, r: ema_step(self.rvq.layers[m]._codebook, r.detach()))

    def _lookup(self, tokens):
        def nearest(m, r):
            codes = nearest_code(r, self.codebooks[m])
            return codes, self.codebooks[m][codes]

        return self._stages(tokens, nearest)

    @torch.no_grad()
    def dequantize(self, codes):
        total = torch.zeros(*codes.shape[:-1], self.codebooks[0].shape[1], dtype=self.codebooks[0].dtype, device=codes.device)
        for m in range(self.n_stages):  # summed in the order of _stages, so the floats equal the lookup's
            total = total + self.codebooks[m][codes[..., m]]
        return total

    def _stages(self, tokens, quantize):
        """Quantize the residual stage by stage with ``quantize(stage, residual) -> (codes, vectors)``."""
        B, T, C = tokens.shape
        residual = tokens.reshape(-1, C)
        total, codes, sq = torch.zeros_like(residual), [], 0.0
        for m in range(self.n_stages):
            c, q = quantize(m, residual)
            sq = sq + (residual - q).pow(2).sum()  # stage m's commitment: its input against its code
            residual, total = residual - q, total + q
            codes.append(c)
        return straight_through(tokens, total.view(B, T, C)), torch.stack(codes, -1).view(B, T, -1), self.commitment * sq / B


class FSQ(TrainedQuantizer):
    """Finite scalar quantization (``vector_quantize_pytorch.FSQ``): prod(levels) implicit codes, no codebook to learn."""

    kind = "fsq"

    def __init__(self, config: VAEConfig):
        super().__init__()
        from vector_quantize_pytorch import FSQ as LibraryFSQ

        self.levels = [int(level) for level in config.fsq_levels]
        self.n_codes = math.prod(self.levels)
        # a level of 2 needs the library's symmetric variant (levels {-1, 1}); the others round to {-(L//2), ..., L//2} / (L//2)
        self.fsq = LibraryFSQ(levels=self.levels, dim=config.latent_dim, return_indices=False, preserve_symmetry=2 in self.levels)
        basis = [math.prod(self.levels[:i]) for i in range(len(self.levels))]
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.int64), persistent=False)
        self.register_buffer("level_counts", torch.tensor(self.levels, dtype=torch.float32), persistent=False)

    @property
    def bits_per_vector(self) -> float:
        return math.log2(self.n_codes)

    def describe(self) -> dict:
        return {**super().describe(), "levels": list(self.levels)}

    def digits(self, q: torch.Tensor) -> torch.Tensor:
        """(..., d) int64 level index in [0, L_i) of each quantized value ``q`` (..., d) on FSQ's grid."""
        L = self.level_counts
        if self.fsq.preserve_symmetry:
            idx = (q + 1) * (L - 1) / 2  # values 2k / (L - 1) - 1
        else:
            half = torch.div(L, 2, rounding_mode="floor")
            idx = q * half + half  # values k / (L // 2), k in [-(L // 2), L // 2] (the top one unused for even L)
        return idx.round().long()

    @torch.no_grad()
    def dequantize(self, codes):
        k = torch.div(codes[..., None], self.basis, rounding_mode="floor") % self.basis.new_tensor(self.levels)  # (B, T, d) digits
        L = self.level_counts
        if self.fsq.preserve_symmetry:
            q = k * 2 / (L - 1) - 1
        else:
            half = torch.div(L, 2, rounding_mode="floor")
            q = (k - half) / half
        return self.fsq.project_out(q.float())

    def _lookup(self, tokens):
        u = self.fsq.project_in(tokens)  # (B, T, d), d = len(levels)
        q = self.fsq.quantize(u)  # bounded by tanh, rounded with a straight-through gradient
        codes = (self.digits(q) * self.basis).sum(-1)  # (B, T) mixed-radix index
        return self.fsq.project_out(q), codes, tokens.new_zeros(())


QUANTIZERS: dict[str, type[TrainedQuantizer]] = {"vq": VQ, "rvq": RVQ, "fsq": FSQ}


def build_quantizer(config: VAEConfig) -> TrainedQuantizer | None:
    """The trained quantizer of a config, or None for ``quantizer: none`` (a continuous VAE)."""
    return None if config.quantizer == "none" else QUANTIZERS[config.quantizer](config)


class CodeUsage:
    """Code counts over one epoch: a bincount per step, read once at the end.

    Codebooks of more than :data:`MAX_BINCOUNT_CODES` codes (large FSQ level sets) keep the
    epoch's codes and count them by one sort at the end instead.
    """

    def __init__(self, n_codes: int, n_stages: int = 1):
        self.n_codes, self.n_stages = int(n_codes), int(n_stages)
        self.dense = self.n_codes <= MAX_BINCOUNT_CODES
        self.counts = torch.zeros(self.n_stages * self.n_codes, dtype=torch.int64) if self.dense else None
        self.kept: list[torch.Tensor] = []

    def update(self, codes: torch.Tensor) -> None:
        """Add one batch of codes (B, [T,] [M]) (M = stages, last)."""
        flat = codes.detach().reshape(-1, self.n_stages).cpu()  # (N, M); counted on CPU whatever device made them
        if self.dense:
            offsets = torch.arange(self.n_stages, dtype=torch.int64) * self.n_codes
            self.counts += torch.bincount((flat + offsets).reshape(-1), minlength=self.counts.numel())
        else:
            self.kept.append(flat.clone())

    def stage_counts(self) -> list[torch.Tensor]:
        """Per stage, the counts of the used codes (zeros left out)."""
        if self.dense:
            return [c[c > 0] for c in self.counts.view(self.n_stages, self.n_codes)]
        flat = torch.cat(self.kept) if self.kept else torch.zeros(0, self.n_stages, dtype=torch.int64)
        return [torch.unique(flat[:, m], return_counts=True)[1] for m in range(self.n_stages)]

    def stats(self) -> dict[str, float]:
        """``codes_used`` and ``codes_dead`` (summed over stages, of M * K), ``perplexity`` and ``code_entropy_bits``
        (of the empirical code distribution; the mean over stages for rvq)."""
        used, entropies = 0, []
        for counts in self.stage_counts():
            used += len(counts)
            p = counts.double() / counts.sum() if len(counts) else counts.double()
            entropies.append(float(-(p * p.log()).sum()))  # nats
        h = sum(entropies) / len(entropies)
        return {"codes_used": used, "codes_dead": self.n_stages * self.n_codes - used, "perplexity": math.exp(h), "code_entropy_bits": h / math.log(2)}
