"""Rates in bytes and round-trip exactness of post-hoc codebooks on each preset's test split.

For each run (``--runs NAME=RUN_DIR ...``; the preset's k-means codebook, ``quantize --preset <dataset>/quantize-euclidean``,
is fitted if missing) on its whole test split:

* **exactness**: every prior, one file per image and one container: ``decompress`` gives exactly the codes ``compress``
  chose and images bit-identical (``torch.equal``) to what ``evaluate --codebook`` decodes;
* **rates** (bits per pixel, H x W): nominal (tokens x log2 K); per prior the ideal -log2 p, the real rate of each image's
  own file (bytes x 8, header included) and of the container; the header's size; and the payload's excess over the ideal
  (real - header - ideal, bits per file: the ANS coder's final state, at most one 32-bit word per stream).

    python bench/codec_rates.py --data-dir ../shared/datasets --runs digits=runs/demo fashion-mnist=runs/codec/fm \
        fashion-mnist-spatial=runs/codec/fms cifar-10-jpeg-spatial=runs/codec/c10s:kmeans-K1024

Writes JSON (``--out``) and prints the rate table (Markdown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from common import machine
from posthoc_vq.config import load_quantize_config
from posthoc_vq.evaluation.bitstreams import decompress_files, open_codec
from posthoc_vq.evaluation.codebook import evaluate_codebook
from posthoc_vq.evaluation.reconstruction import decode
from posthoc_vq.io import read_json, write_json
from posthoc_vq.latents import from_tokens, run_latents
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import fit_codebook_for_run
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.run import Run


def evaluation_images(run: Path, codec) -> tuple[np.ndarray, torch.Tensor]:
    """What ``evaluate --codebook`` decodes on the test split: its codes and images."""
    latents = run_latents(run, "test", codec.cb_meta["latents"], model=codec.model)
    codes = predict_codes(codec.codebook, latents.tokens(), latents.token_labels())
    return codes, decode(codec.model, torch.from_numpy(from_tokens(codec.codebook.inverse_transform(codes), latents.latent_shape)))


def measure(preset: str, run: Path, data_dir: str, name: str | None = None) -> dict:
    if name is None:
        q = load_quantize_config(f"{preset}/quantize-euclidean")
        name = q.default_name()
        if name not in Run.open(run).codebook_names():
            fit_codebook_for_run(run, q, data_dir=data_dir)
    result = evaluate_codebook(run, name, data_dir=data_dir).to_json()
    codec = open_codec(run, name)
    ref_codes, ref_images = evaluation_images(run, codec)
    from posthoc_vq.evaluation.reconstruction import split_images
    from posthoc_vq.latents import load_run_splits

    x = split_images(load_run_splits(run, data_dir), "test")
    codes = codec.codes(x)
    exact = {}
    for prior in codec.priors():
        for container in (False, True):
            files = codec.compress(x, prior, container)
            back = decompress_files(run, files)
            got_codes = np.concatenate([c for _, c, _ in back]).reshape(codes.shape)
            got_images = torch.cat([i for _, _, i in back])
            exact[f"{prior}/{'container' if container else 'per-image'}"] = {
                "codes_equal": bool(np.array_equal(got_codes, codes)) and bool(np.array_equal(codes.reshape(len(x), -1), ref_codes.reshape(len(x), -1))),
                "images_identical_to_evaluate": bool(torch.equal(got_images, ref_images)), "files": len(files), "bytes": sum(map(len, files)),
            }
    rate = result["rate"]
    pixels = rate["pixels_per_image"]
    priors = {}
    for kind, r in rate["priors"].items():
        ideal, real = np.asarray(r["per_image_bits"]["ideal"]), np.asarray(r["per_image_bits"]["real"])
        excess = real - 8 * r["header_bytes_mean"] - ideal
        priors[kind] = {"ideal_bpp": r["ideal_bpp"], "real_bpp": r["real_bpp"], "container_bpp": r["container_bpp"], "header_bytes": r["header_bytes_mean"],
                        "payload_excess_bits_mean": float(excess.mean()), "payload_excess_bits_max": float(excess.max()),
                        "container_over_ideal": r["container_bpp"] / r["ideal_bpp"]["mean"] - 1}
    return {"preset": preset, "run": str(run), "codebook": name, "n_images": len(x), "image_shape": list(x.shape[1:]), "grid": list(codec.grid),
            "n_codes": codec.codebook.n_codes, "psnr_db": result["quantized"]["psnr_db"], "nominal_bpp": rate["nominal_bpp"], "pixels": pixels,
            "priors": priors, "exactness": exact}


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | codebook | tokens | nominal bpp | prior | ideal bpp | real bpp, own file [95% CI] | header bytes | payload - ideal (bits/file) | container bpp |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for kind, p in r["priors"].items():
            ci = p["real_bpp"]
            lines.append(f"| {r['preset']} | {r['codebook']} | {r['grid'][0]}x{r['grid'][1]} | {r['nominal_bpp']:.4f} | {kind} | {p['ideal_bpp']['mean']:.4f} | "
                         f"{ci['mean']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}] | {p['header_bytes']:.0f} | {p['payload_excess_bits_mean']:.1f} | {p['container_bpp']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--runs", nargs="+", required=True, metavar="PRESET=RUN[:CODEBOOK]",
                    help="a run of each preset; CODEBOOK: one of its codebooks (default: the preset's k-means, fitted if missing)")
    ap.add_argument("--out", default="bench/results/codec_rates.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for item in args.runs:
        preset, run = item.split("=", 1)
        run, _, name = run.partition(":")
        rows.append(measure(preset, Path(run), args.data_dir, name or None))
        bad = {k: v for k, v in rows[-1]["exactness"].items() if not (v["codes_equal"] and v["images_identical_to_evaluate"])}
        print(f"{preset}: {'exact round trips (' + str(len(rows[-1]['exactness'])) + ' prior x layout cases)' if not bad else 'NOT EXACT: ' + str(bad)}")
    print(markdown(rows))
    write_json(Path(args.out), {"benchmark": "codec_rates", "rows": rows, "markdown": markdown(rows), "machine": machine(), "provenance": provenance(),
                                "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
