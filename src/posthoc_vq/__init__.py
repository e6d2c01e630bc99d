"""posthoc-vq: post-hoc latent and weight quantization of trained VAEs.

Importing the package sets the passive OpenMP wait policy when other tasks are running on the
CPU (and leaves the runtime's own spin on a quiet one), unless you set ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` yourself, so that training does not collapse on a CPU shared
with other processes (:mod:`posthoc_vq.waitpolicy`). It takes effect only when posthoc_vq is
imported before torch; otherwise nothing is changed, and the run's provenance records
``wait_policy.effective: false``. ``POSTHOC_VQ_WAIT_POLICY=passive`` or ``=off`` forces the choice.
"""

from posthoc_vq.waitpolicy import apply_default as _apply_wait_policy_default

_apply_wait_policy_default()  # before anything imports torch: OpenMP reads its environment when torch loads

from posthoc_vq.compat import check_torch as _check_torch  # noqa: E402 - reads torch's version from its metadata, never imports it

_check_torch()  # torch older than the tested window: ImportError naming it; newer: one warning line

__version__ = "0.1.0"

# Library API (bring your own VAE), imported on first use so `import posthoc_vq.<module>` stays light.
_API = {
    "fit_codebook", "evaluate", "FittedCodebook", "load_run", "LoadedRun", "load_codebook", "compress_weights", "PackedWeights",
    "load_packed", "evaluate_weights", "compress", "decompress", "compare_codecs", "ablate",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        from posthoc_vq import api

        return getattr(api, name)
    raise AttributeError(f"module 'posthoc_vq' has no attribute '{name}'")
