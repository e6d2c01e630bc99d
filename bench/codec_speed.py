"""Speed of the codec: entropy coding in symbols per second, and compress + decompress of a split against the network.

Measured in one run on 2 threads, on the cifar-10-jpeg test split (10,000 images) and the ``cifar-10-jpeg-spatial``
run's codebooks (``--run``, ``--codebooks``; made by ``bench/codec_rd.py``):

* **entropy coding**: the split's codes (N x 8 x 8 tokens x M stages) as one container, encoded and decoded by each
  prior (:meth:`posthoc_vq.codec.priors.Prior.encode` / ``decode``), in symbols per second; the anchor is constriction
  itself on the same symbols with one fixed categorical model, called once (the library's own rate, no Python between).
* **compress + decompress, network included**: images -> posterior means -> codes -> container file -> codes ->
  latents -> decoder -> images (:class:`posthoc_vq.evaluation.bitstreams.RunCodec`), against the network's own
  encode + decode of the same images (the bound: what any codec with this network must spend). The overhead is
  (codec time - network time) / network time, split into the quantizer (the nearest-code search and the way back to
  latents, which a trained VQ's own forward spends too) and the coding (entropy coding, header, CRC, reading back).

Each variant runs ``--repeats`` times, interleaved; the median is reported.

    python bench/codec_speed.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import constriction
import numpy as np
import torch

from common import machine
from posthoc_vq.codec import bitstream
from posthoc_vq.evaluation.bitstreams import open_codec
from posthoc_vq.evaluation.reconstruction import decode, split_images
from posthoc_vq.io import write_json
from posthoc_vq.latents import encode_split, load_run_splits, to_tokens
from posthoc_vq.quantize.priors import codes_grid
from posthoc_vq.provenance import provenance


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--run", default="runs/codec/c10s")
    ap.add_argument("--codebooks", default="kmeans-K1024,residual-M4-K1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/codec_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    x = split_images(load_run_splits(args.run, args.data_dir), "test")
    result = {"benchmark": "codec_speed", "run": args.run, "n_images": len(x), "entropy_coding": [], "end_to_end": [], "repeats": args.repeats}
    for name in args.codebooks.split(","):
        codec = open_codec(args.run, name)
        codes = codec.codes(x)
        n_symbols = codes.size
        for kind, prior in codec.priors().items():
            words = prior.encode(codes)
            assert np.array_equal(prior.decode(words, *codes.shape[:3]), codes)
            enc = median_seconds(lambda: prior.encode(codes), args.repeats)
            dec = median_seconds(lambda: prior.decode(words, *codes.shape[:3]), args.repeats)
            row = {"codebook": name, "prior": kind, "symbols": int(n_symbols), "encode_msym_s": n_symbols / enc / 1e6, "decode_msym_s": n_symbols / dec / 1e6,
                   "payload_bits_per_symbol": 32 * len(words) / n_symbols}
            if kind != "context":  # the anchor: constriction alone, one call, one fixed model (stage 0's), the same symbols
                flat = np.ascontiguousarray(codes.reshape(-1), dtype=np.int32)
                model = prior._models[0][0]

                def raw_encode():
                    c = constriction.stream.stack.AnsCoder()
                    c.encode_reverse(flat, model)
                    return c.get_compressed()

                raw_words = raw_encode()
                row["constriction_encode_msym_s"] = n_symbols / median_seconds(raw_encode, args.repeats) / 1e6
                row["constriction_decode_msym_s"] = n_symbols / median_seconds(lambda: constriction.stream.stack.AnsCoder(raw_words).decode(model, len(flat)), args.repeats) / 1e6
            result["entropy_coding"].append(row)
            print(f"{name:20s} {kind:9s} {n_symbols:>9,} symbols: encode {row['encode_msym_s']:7.1f} M/s, decode {row['decode_msym_s']:7.1f} M/s"
                  + (f" (constriction alone {row['constriction_encode_msym_s']:.1f} / {row['constriction_decode_msym_s']:.1f} M/s)" if "constriction_encode_msym_s" in row else ""))
        z = encode_split(codec.model, x, "mu")
        tokens = to_tokens(z.numpy())
        for kind in codec.priors():
            def network():
                decode(codec.model, encode_split(codec.model, x, "mu"), 1000)

            def codec_round_trip():
                data = codec.compress(x, kind, container=True)[0]
                _, codes_back = codec.read(data)
                codec.images(codes_back)

            def quantizer():  # the nearest-code search and the way back: what any VQ codec (a trained VQ's forward too) spends
                codec.latents(codes_grid(codec.codebook.predict(tokens), len(x), codec.latent_shape))

            def coding():  # entropy coding and the file: header, payload, CRC, and reading it back
                codec.read(codec.write(codes, kind, container=True)[0])

            t = {k: [] for k in ("network", "codec", "quantizer", "coding")}
            for _ in range(args.repeats):  # interleaved
                for k, fn in (("network", network), ("codec", codec_round_trip), ("quantizer", quantizer), ("coding", coding)):
                    t[k].append(median_seconds(fn, 1))
            m = {k: statistics.median(v) for k, v in t.items()}
            size = len(codec.compress(x, kind, container=True)[0])
            row = {"codebook": name, "prior": kind, "network_seconds": m["network"], "codec_seconds": m["codec"],
                   "quantizer_seconds": m["quantizer"], "coding_seconds": m["coding"],
                   "overhead_fraction": (m["codec"] - m["network"]) / m["network"],
                   "quantizer_fraction": m["quantizer"] / m["network"], "coding_fraction": m["coding"] / m["network"],
                   "container_bytes": size, "container_bpp": size * 8 / (len(x) * x.shape[2] * x.shape[3])}
            result["end_to_end"].append(row)
            print(f"{name:20s} {kind:9s} compress+decompress {m['codec']:5.2f} s vs network encode+decode {m['network']:5.2f} s: overhead "
                  f"{100 * row['overhead_fraction']:+.1f}% (nearest-code search and back {100 * row['quantizer_fraction']:.1f}%, "
                  f"entropy coding and file {100 * row['coding_fraction']:.1f}%)")
    result |= {"machine": machine(), "provenance": provenance(), "command": " ".join(sys.argv)}
    write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
