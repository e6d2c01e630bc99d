"""Time the cifar-10-jpeg loader: the first decode of 60,000 JPEGs and the cached load.

Each measurement runs in a fresh process (so no import or page-cache warm-up of the loader's
own process is shared), against a cache folder that starts empty. The anchor is a plain loop
of PIL decodes over the same member bytes, read from the same archive, in the same run.

    python bench/cifar_jpeg_load.py --data-dir ../shared/datasets

Targets (issue 14): first decode < 30 s on 2 cores, cached load < 2 s.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

from common import in_process, machine, sgemm_gflops
from posthoc_vq.io import write_json
from posthoc_vq.provenance import provenance


def _loader(data_dir: str, cache: str, queue) -> None:
    from posthoc_vq.data.cifar_jpeg import load_cifar10_jpeg

    tic = time.perf_counter()
    train, test = load_cifar10_jpeg(Path(data_dir), cache=Path(cache), progress=False)
    queue.put((time.perf_counter() - tic, len(train) + len(test)))


def _pil_loop(data_dir: str, cache: str, queue) -> None:
    import numpy as np
    from PIL import Image

    from posthoc_vq.data.cifar_jpeg import ARCHIVE_NAME, NAME

    tic = time.perf_counter()
    raws = []
    with tarfile.open(Path(data_dir) / NAME / ARCHIVE_NAME, "r:gz") as tar:
        for member in tar:
            if member.isfile():
                raws.append(tar.extractfile(member).read())
    images = np.empty((len(raws), 32, 32, 3), dtype=np.uint8)
    for i, raw in enumerate(raws):
        images[i] = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    queue.put((time.perf_counter() - tic, len(raws)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--out", default="bench/results/cifar_jpeg_load.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        anchor, n_anchor = in_process(_pil_loop, args.data_dir, cache)
        first, n = in_process(_loader, args.data_dir, cache)
        cached, _ = in_process(_loader, args.data_dir, cache)
    result = {
        "dataset": "cifar-10-jpeg",
        "images": n,
        "first_decode_seconds": first,
        "cached_load_seconds": cached,
        "anchor_pil_plain_loop_seconds": anchor,
        "anchor_images": n_anchor,
        "first_decode_over_anchor": first / anchor,
        "targets_seconds": {"first_decode": 30.0, "cached_load": 2.0},
        "machine": machine(),
        "sgemm_gflops_2048": sgemm_gflops(threads=2),
        "provenance": provenance(),
    }
    out = Path(args.out)
    write_json(out, result)
    print(f"cifar-10-jpeg, {n} images: first decode {first:.2f} s (PIL plain loop {anchor:.2f} s), cached load {cached:.2f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
