"""Typed results: what an evaluation returns and what every reader of one reads, by attribute.

An evaluation (``eval/*.json``) is the project's main output. Its blocks are declared here once,
as pydantic models, and every module that produces or reads one (the evaluations, the audit,
the sweep jobs, the report, the CLI's printers and the library API) passes these objects, never
a bare ``dict``:

* :class:`MeanCI`: a mean with its 95% confidence interval over images (``mean, low, high, std, n, confidence``);
* :class:`ImageQuality`: MSE, PSNR (dB), SSIM (and MS-SSIM for large images) of outputs against references;
* :class:`Usage`: how a codebook's codes are used on a set of vectors (dead codes, entropy, perplexity);
* :class:`Rate`: bits per pixel of the files a codebook's bitstreams make, per prior (:class:`PriorRate`);
* :class:`Compute` and :class:`ComputeAccount`: what a step, and everything behind a result, cost;
* :class:`Evaluation`: one evaluation (continuous, codebook, trained quantizer, packed weights), with its
  header (run, dataset, split, model, training state), provenance and the audit's warnings.

The JSON on disk is unchanged: :meth:`Result.to_json` writes exactly the keys a result was made
with (unset optional fields are left out, keys a block does not declare are kept), so files written
before these models read back through :func:`~posthoc_vq.results.read_evaluation` as they are.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from posthoc_vq.io import write_json


class Result(BaseModel):
    """A block of a result: declared fields read by attribute, undeclared ones kept (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this block: the keys it was made with (unset optional fields left out)."""
        return self.model_dump(mode="python", exclude_unset=True)


class MeanCI(Result):
    """A mean with a Student-t confidence interval (:func:`~posthoc_vq.metrics.intervals.mean_ci`); NaN bounds are None."""

    mean: float | None
    low: float | None = None
    high: float | None = None
    std: float | None = None
    n: int = Field(ge=0)
    confidence: float = 0.95


class ImageQuality(Result):
    """Quality of N outputs against their references, each a mean with a 95% CI over images."""

    n_images: int = Field(ge=0)
    mse: MeanCI
    psnr_db: MeanCI
    ssim: MeanCI
    ms_ssim: MeanCI | None = None  # images of at least 176 px a side only
    ssim_window: dict[str, float] | None = None
    psnr_cap_db: float | None = None
    output_range: list[float] | None = None  # the outputs' [min, max], for the audit's range rule


class Usage(Result):
    """Code usage over a set of vectors (:func:`~posthoc_vq.metrics.codebook.codebook_usage`); residual: the first stage's
    numbers, with ``stages`` (one per stage) and ``distinct_tuples`` kept as extra keys."""

    n_codes: int = Field(ge=1)
    used: int = Field(ge=0)
    dead: int = Field(ge=0)
    usage_fraction: float
    n_vectors: int | None = None
    entropy_bits: float | None = None
    entropy_nats: float | None = None
    max_entropy_bits: float | None = None
    perplexity: float | None = None
    top_code_share: float | None = None


class PriorRate(Result):
    """One prior's bits per pixel: ideal (the entropy coder's bound) and real (bytes of one file per image x 8)."""

    ideal_bpp: MeanCI
    real_bpp: MeanCI
    real_bytes_mean: float | None = None
    header_bytes_mean: float | None = None
    container_bytes: int = Field(ge=0)
    container_bpp: float | None = None
    per_image_bits: dict[str, list[float]]


class Rate(Result):
    """The ``rate`` block: nominal bits (tokens x log2 K), and the real bits each prior's files hold."""

    pixels_per_image: int = Field(ge=1)
    nominal_bits_per_image: float
    nominal_bpp: float
    n_images: int = Field(ge=0)
    priors: dict[str, PriorRate]
    not_coded: str | None = None  # too many codes for a probability table: the rate is nominal only
    per_image_psnr_db: list[float] | None = None  # paired with per_image_bits, for BD-rate CIs


class Compute(Result):
    """What one step cost, for a quality-vs-compute plot: training, a latent encoding, a codebook fit, a fine-tune."""

    wall_seconds: float = Field(ge=0)
    optimizer_steps: int = Field(ge=0)
    images_seen: int = Field(ge=0)  # images passed through the model (training: per epoch, so epochs x train images)


class ComputeAccount(Result):
    """What made a result: its parts (None where unknown), their ``total``, and whether the total is ``complete``."""

    total: Compute
    complete: bool
    missing: list[str] = Field(default_factory=list)
    training: Compute | None = None
    finetune: Compute | None = None
    latent_encoding: Compute | None = None
    codebook_fit: Compute | None = None


class Warning_(BaseModel):
    """One audit warning: the rule's ``code`` and its message (:mod:`posthoc_vq.audit`)."""

    code: str
    message: str


class ModelInfo(Result):
    """The measured model: its checksum, family, latent shape and size, and training state at the time."""

    sha256: str | None = None
    family: str | None = None
    latent_dim: int | None = None
    latent_shape: list[int] | None = None
    num_parameters: int | None = None
    fp32_bytes: int | None = None
    epoch: int | None = None
    trained_steps: int | None = None
    quantizer: str | None = None  # trained with its own quantizer: vq, rvq, fsq
    output_range: list[float] | None = None
    pretrained: dict[str, Any] | None = None


class TrainingState(Result):
    """How the measured model's training ended (None: trained elsewhere, or unknown)."""

    converged: bool | None = None
    stop_reason: str | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    steps: int | None = None


class Comparison(Result):
    """A reference output and a quantized one: ``continuous`` and ``quantized`` against ground truth, ``penalty``
    (quantized against the reference) and the per-image PSNR change with its CI."""

    continuous: ImageQuality | None = None
    quantized: ImageQuality | None = None
    penalty: ImageQuality | None = None
    psnr_change_db: MeanCI | None = None


class CodebookComparison(Comparison):
    """Packed weights around a latent codebook (``with_codebook`` of a weights evaluation)."""

    name: str
    method: str | None = None
    K: int | None = None
    bits_per_image: float | None = None
    fit_on: str | None = None
    fit_includes_test: bool | None = None
    code_agreement: float | None = None
    warnings: list[Warning_] = Field(default_factory=list)


class Evaluation(Comparison):
    """One evaluation result (``eval/*.json``).

    Every kind has the header (``run``, ``dataset``, ``split``, ``model``, ``training``), ``continuous``
    (the model's output against ground truth), ``provenance`` and ``warnings``. A codebook's and a trained
    quantizer's add ``quantized``, ``penalty``, ``psnr_change_db``, the bits, ``usage`` per split and ``rate``;
    packed weights add ``weights``, ``size`` and ``with_codebook``.
    """

    run: str | None = None
    dataset: str | None = None
    split: str
    model: ModelInfo = Field(default_factory=ModelInfo)
    training: TrainingState = Field(default_factory=TrainingState)
    latents: str | None = None
    pre_quantization: ImageQuality | None = None  # a trained quantizer's decoder fed z_e (informational)
    # a codebook or trained quantizer
    codebook: str | None = None
    codebook_sha256: str | None = None
    method: str | None = None
    K: int | None = None
    bits_per_image: float | None = None
    bits_per_token: float | None = None
    tokens_per_image: int | None = None
    latent_shape: list[int] | None = None
    latent_seed: int | None = None
    fit_on: str | None = None
    fit_includes_test: bool | None = None
    n_fit: int | None = None
    latent_mse: float | None = None
    usage: dict[str, Usage | None] | None = None
    graph: dict[str, Any] | None = None
    quantizer: dict[str, Any] | None = None
    rate: Rate | None = None
    # packed weights
    weights: str | None = None
    weights_sha256: str | None = None
    bits: int | None = None
    size: dict[str, Any] | None = None
    with_codebook: CodebookComparison | None = None
    # every kind
    device: str | None = None
    compute: ComputeAccount | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    warnings: list[Warning_] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _older_weights_files(cls, data: Any) -> Any:
        """Weight evaluations written before ``with_codebook`` kept that block under ``codebook``: read it from there."""
        if isinstance(data, dict) and isinstance(data.get("codebook"), dict) and "with_codebook" not in data:
            data = {**data, "with_codebook": data["codebook"]}
            del data["codebook"]
        return data

    @property
    def is_codebook(self) -> bool:
        """Whether this is a post-hoc codebook's evaluation (not the continuous model, a trained quantizer or weights)."""
        return self.codebook is not None

    def usage_on(self, split: str | None = None) -> Usage | None:
        """Code usage on ``split`` (default: the evaluated split)."""
        return (self.usage or {}).get(split or self.split)

    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    def write(self, path: str | os.PathLike) -> None:
        """Write the result's JSON to ``path`` (atomically)."""
        write_json(path, self.to_json())



class CompressionRow(Result):
    """One cell of the compound-compression table: a run (or a run's artifact) at one weight width."""

    run: str  # the run folder (compress-table) or the artifact's label in a run report (fp32, a weights name, "+ codebook")
    latent_dim: int | None = None
    parameters: int | None = None
    bits: int
    file_bytes: int | None = None  # the file that ships; None: not recorded
    ratio_own: float | None = None
    compound_factor: float | None = None
    psnr_db: MeanCI
    ssim: MeanCI
    psnr_change_db: MeanCI | None = None
    converged: bool | None = None
    warnings: list[Warning_] = Field(default_factory=list)


class CompressionTable(Result):
    """``compression-<split>.json`` of ``posthoc-vq compress-table``."""

    split: str
    bits: list[int]
    rows: list[CompressionRow]
