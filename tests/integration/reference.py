"""Independent reference implementations the integration tests check the package against."""

import numpy as np
import scipy.linalg


def fd_scipy(a, b) -> float:
    """Fréchet distance between two feature sets (N, F), straight from the formula with scipy's matrix square root."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def codebook_reconstruction_fd(model, codebook, fnet, x) -> float:
    """FD between images ``x`` and their reconstructions through ``codebook`` (the model's mu snapped to the nearest code), by hand."""
    import torch

    with torch.no_grad():
        mu = model.encode(x).mu.numpy()
        xq = model.decode(torch.from_numpy(codebook.codebook_[codebook.predict(mu)]))
    return fd_scipy(fnet.embed(x)[0].numpy(), fnet.embed(xq)[0].numpy())
