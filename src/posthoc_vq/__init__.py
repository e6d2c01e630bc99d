"""posthoc-vq: post-hoc latent and weight quantization of trained VAEs."""

__version__ = "0.1.0"

# Library API (bring your own VAE), imported on first use so `import posthoc_vq.<module>` stays light.
_API = {
    "fit_codebook", "evaluate", "FittedCodebook", "load_run", "LoadedRun", "load_codebook", "compress_weights", "PackedWeights",
    "load_packed", "evaluate_weights",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        from posthoc_vq import api

        return getattr(api, name)
    raise AttributeError(f"module 'posthoc_vq' has no attribute '{name}'")
