"""Codebook kernels against faiss, scikit-learn and the compute bound: k-means and the exact kNN graph.

Measured in one run, on the same data and thread count:

* sgemm rate: best of several 2048 x 2048 float32 matmuls (torch), read at the start,
  between the stages and at the end; the highest reading is the rate (lower ones mean
  other users of the shared CPU were busy);
* k-means, K codes, ``--iters`` Lloyd iterations: ours (``KMeans``, k-means++ seeding
  included, tol=0 so every iteration runs; seeding also timed alone) vs ``faiss.Kmeans``
  (max_points_per_centroid raised to ceil(N / K) where its default 256 would subsample: every
  method sees every point) vs scikit-learn (init='random', Lloyd). Final inertia of each codebook is
  recomputed on the full data by one float64 function;
* exact kNN graph, k neighbours of every point: ``knn_exact`` vs ``faiss.IndexFlatL2``
  search with k + 1 (self included); optionally HNSW (``--hnsw``) with its recall; skipped
  with ``--no-knn``;
* optionally (``--geodesic``) a whole ``GeodesicKMedoids`` fit, if that module exists;
* instead of the above (``--assign N``): token-scale geodesic assignment, the case of the
  fashion-mnist-spatial preset. A ``GeodesicKMedoids`` (HNSW graph, as the preset) is fitted
  on ``--fit-size`` points, then ``predict`` assigns N queries; against the bound of the
  dense (N, D) @ (D, fit-size) matmul its kNN linking implies, and against faiss
  ``IndexFlatL2`` searching the same k neighbours of the same queries. Labels are also
  computed from faiss's neighbours by the same rule, and their agreement reported.

Methods run interleaved, once per round for ``--repeats`` rounds; each reports its best
round. Per stage: FLOPs, seconds, bound seconds = FLOPs / sgemm rate, ratio to bound. The
bound counts dense work (k-means: iters x 2 N K D; kNN: 2 N^2 D); ours does less where it
can prove it unnecessary (pruned Lloyd, symmetric kNN blocks), and one more (pruned)
assignment than ``iters`` so that its labels and inertia refer to the final centroids.

    python bench/codebooks.py                       # stand-in data
    python bench/codebooks.py --latents z.npy       # (N, 128) float32 latents
    python bench/codebooks.py --no-knn              # k-means only
    python bench/codebooks.py --assign 2646000 --repeats 1   # 8-D stand-in tokens
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

import faiss
import numpy as np
import torch
from sklearn.cluster import KMeans as SkKMeans
from threadpoolctl import threadpool_limits

from common import interleaved, machine, sgemm_gflops, timed  # bench/ is on sys.path
from posthoc_vq.io import write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.knn import knn_exact, knn_hnsw, knn_recall
from posthoc_vq.quantize.latent.rowpool import RowPool


def stand_in(n: int = 70_000, d: int = 128, components: int = 10, seed: int = 0) -> np.ndarray:
    """(n, d) float32 from a seeded Gaussian mixture of anisotropic components: random means
    (scale 2), random rotations, per-axis scales log-uniform in [e^-2.5, e^0.5], Dirichlet weights."""
    rng = np.random.default_rng(seed)
    label = rng.choice(components, n, p=rng.dirichlet(np.full(components, 2.0)))
    X = np.empty((n, d), np.float32)
    for c in range(components):
        m = label == c
        rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
        scales = np.exp(rng.uniform(-2.5, 0.5, d))
        X[m] = (rng.standard_normal((m.sum(), d)) * scales) @ rotation.T + 2.0 * rng.standard_normal(d)
    return X


def inertia(X: np.ndarray, C: np.ndarray, chunk: int = 8192) -> float:
    """Sum of squared distances to the nearest codebook row, float64 (one function for every codebook)."""
    Xt, Ct = torch.from_numpy(X).double(), torch.from_numpy(np.asarray(C)).double()
    c_sq = (Ct * Ct).sum(1)
    total = 0.0
    for s in range(0, len(Xt), chunk):
        x = Xt[s : s + chunk]
        total += float((torch.addmm(c_sq, x, Ct.T, alpha=-2.0).amin(1) + (x * x).sum(1)).clamp(min=0).sum())
    return total


def stage(flops: float, times: list[float], gflops: float, **extra: Any) -> dict[str, Any]:
    bound = flops / (gflops * 1e9)
    return {"flops": flops, "seconds": min(times), "all_seconds": times, "bound_seconds": bound, "ratio_to_bound": min(times) / bound, **extra}


def run_kmeans(X: np.ndarray, K: int, iters: int, seed: int, repeats: int, threads: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    D = X.shape[1]
    Xc = torch.from_numpy(X - X.mean(0, dtype=np.float64).astype(np.float32))

    def seeding():
        with RowPool() as pool:
            return KMeans(K, random_state=seed)._initial_centroids(Xc, np.zeros(D), np.random.default_rng(seed), pool)

    def faiss_fit():
        # every point, as ours: faiss would otherwise subsample to 256 K points (1,048,576 of the 1.08 M taef2 tokens at K = 4,096)
        km = faiss.Kmeans(D, K, niter=iters, seed=seed, verbose=False, spherical=False, max_points_per_centroid=max(256, -(-len(X) // K)))
        km.train(X)
        return km.centroids

    Xt, Ct = torch.from_numpy(X), torch.randn(K, D)
    rows = max(1, 2**21 // K)  # blocks of 2**21 distances, as the nearest-code kernel
    buf = torch.empty(rows, K)

    def same_shape_matmul():
        """One pass of the (N, D) @ (D, K) distance product alone, in blocks into one buffer: no argmin, no update."""
        for i in range(0, len(Xt), rows):
            xb = Xt[i : i + rows]
            torch.mm(xb, Ct.T, out=buf[: len(xb)])

    def sklearn_fit():
        with threadpool_limits(threads):
            return SkKMeans(K, init="random", n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=seed).fit(X)

    return interleaved(
        {
            "seeding": seeding,
            "ours": lambda: KMeans(K, max_iter=iters, tol=0.0, random_state=seed).fit(X),
            "faiss": faiss_fit,
            "sklearn_random_init": sklearn_fit,
            "same_shape_matmul_pass": same_shape_matmul,
        },
        repeats,
    )


def report_kmeans(X: np.ndarray, K: int, iters: int, res: dict[str, Any], times: dict[str, list[float]], gflops: float) -> dict[str, Any]:
    N, D = X.shape
    flops = iters * 2.0 * N * K * D
    ours, sk = res["ours"], res["sklearn_random_init"]
    inert = {"ours": inertia(X, ours.codebook_), "faiss": inertia(X, res["faiss"]), "sklearn": inertia(X, sk.cluster_centers_)}
    out = {
        "ours": stage(flops, times["ours"], gflops, seeding_seconds=min(times["seeding"]), n_iter=ours.n_iter_, n_reseeded=ours.n_reseeded_, reported_inertia=ours.inertia_),
        "faiss": stage(flops, times["faiss"], gflops),
        "sklearn_random_init": stage(flops, times["sklearn_random_init"], gflops, n_iter=int(sk.n_iter_)),
        "inertia": inert,
        "inertia_ours_vs_faiss": inert["ours"] / inert["faiss"] - 1.0,
        "inertia_ours_vs_sklearn": inert["ours"] / inert["sklearn"] - 1.0,
    }
    # the same-size bound: iters passes of the same-shape product alone (with D = 32 it is bound by writing the N x K
    # distances, not by FLOPs: the square-sgemm bound above is then out of reach for every method)
    out["same_shape_matmul_seconds"] = iters * min(times["same_shape_matmul_pass"])
    out["same_shape_matmul_gflops"] = flops / out["same_shape_matmul_seconds"] / 1e9
    for name in ("ours", "faiss", "sklearn_random_init"):
        out[name]["ratio_to_same_shape_matmul"] = out[name]["seconds"] / out["same_shape_matmul_seconds"]
    out["time_ours_over_faiss"] = out["ours"]["seconds"] / out["faiss"]["seconds"]
    out["time_ours_over_sklearn"] = out["ours"]["seconds"] / out["sklearn_random_init"]["seconds"]
    return out


def run_knn(X: np.ndarray, k: int, repeats: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    def faiss_search():
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(X)
        return index.search(X, k + 1)

    return interleaved({"ours": lambda: knn_exact(X, k), "faiss_flat": faiss_search}, repeats)


def report_knn(X: np.ndarray, k: int, res: dict[str, Any], times: dict[str, list[float]], gflops: float) -> dict[str, Any]:
    N, D = X.shape
    flops = 2.0 * N * N * D
    (ours_d, ours_i), (f_sq, f_i) = res["ours"], res["faiss_flat"]
    f_i = np.array([row[row != i][:k] for i, row in enumerate(f_i)])  # drop self (first, barring duplicates)
    out = {
        "k": k,
        "ours": stage(flops, times["ours"], gflops),
        "faiss_flat": stage(flops, times["faiss_flat"], gflops),
        "agreement_with_faiss": knn_recall(ours_i, f_i),
        "max_kth_distance_difference": float(np.abs(ours_d[:, -1] - np.sqrt(np.maximum(np.sort(f_sq, 1)[:, k], 0))).max()),
    }
    out["time_ours_over_faiss"] = out["ours"]["seconds"] / out["faiss_flat"]["seconds"]
    return out


def bench_hnsw(X: np.ndarray, k: int, exact_idx: np.ndarray, seed: int) -> dict[str, Any]:
    (_, idx), t = timed(lambda: knn_hnsw(X, k, random_state=seed))
    return {"seconds": t, "recall_vs_exact": knn_recall(idx, exact_idx), "M": 32, "ef_construction": 200, "ef_search": 128}


def bench_geodesic(X: np.ndarray, K: int, k: int, seed: int) -> dict[str, Any] | None:
    if importlib.util.find_spec("posthoc_vq.quantize.latent.geodesic") is None:
        print("geodesic: posthoc_vq.quantize.latent.geodesic is absent, skipped")
        return None
    from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids

    est, t = timed(lambda: GeodesicKMedoids(K, n_neighbors=k, random_state=seed).fit(X))
    return {"seconds": t, "n_iter": est.n_iter_, "objective": est.objective_, "graph": est.graph_stats_}


def assign_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Fit sample (fit_size, D) and queries (assign, D): from ``--latents`` (a seeded sample to
    fit; the first ``--assign`` rows as queries) or the stand-in with ``--dim`` dimensions."""
    if args.latents:
        Z = np.ascontiguousarray(np.load(args.latents), dtype=np.float32)
        fit = Z[np.sort(np.random.default_rng(args.seed).choice(len(Z), args.fit_size, replace=False))]
        return fit, Z[: args.assign], f"latents {args.latents}"
    Z = stand_in(args.fit_size + args.assign, args.dim, seed=args.seed)
    return Z[: args.fit_size], Z[args.fit_size :], f"stand-in: {args.fit_size + args.assign:,} x {args.dim} float32 Gaussian mixture (seed {args.seed}); the first {args.fit_size:,} fitted"


def bench_assign(fit: np.ndarray, Q: np.ndarray, K: int, k: int, fit_iters: int, seed: int, repeats: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids

    est, fit_seconds = timed(lambda: GeodesicKMedoids(K, n_neighbors=k, graph="hnsw", max_iter=fit_iters, random_state=seed).fit(fit))

    def faiss_search():
        index = faiss.IndexFlatL2(fit.shape[1])
        index.add(fit)
        return index.search(Q, k)

    res, times = interleaved({"ours": lambda: est.predict(Q, return_distance=True), "faiss_flat": faiss_search}, repeats)
    res["fit"] = {"seconds": fit_seconds, "n_iter": est.n_iter_, "n_neighbors": est.n_neighbors_}
    res["estimator"] = est
    return res, times


def report_assign(fit: np.ndarray, Q: np.ndarray, k: int, res: dict[str, Any], times: dict[str, list[float]], gflops: float) -> dict[str, Any]:
    est, (labels, dist) = res["estimator"], res["ours"]
    flops = 2.0 * len(Q) * len(fit) * fit.shape[1]
    f_idx = res["faiss_flat"][1]  # faiss's k neighbours, linked by the rule of GeodesicKMedoids.predict
    d = np.concatenate([np.linalg.norm(Q[s : s + 65536, None] - fit[f_idx[s : s + 65536]], axis=2) for s in range(0, len(Q), 65536)])
    f_labels = est.labels_[f_idx[np.arange(len(Q)), (d + est.node_distance_[f_idx]).argmin(1)]]
    out = {
        "queries": len(Q),
        "fit_size": len(fit),
        "k": k,
        "fit": res["fit"],
        "ours_predict": stage(flops, times["ours"], gflops),
        "faiss_flat_search": stage(flops, times["faiss_flat"], gflops),
        "label_agreement_with_faiss_links": float((labels == f_labels).mean()),
        "mean_distance": float(dist.mean(dtype=np.float64)),
    }
    out["time_ours_over_faiss"] = out["ours_predict"]["seconds"] / out["faiss_flat_search"]["seconds"]
    return out


def main_assign(args: argparse.Namespace) -> int:
    fit, Q, data = assign_data(args)
    rates = [sgemm_gflops()]
    res, times = bench_assign(fit, Q, args.clusters, args.neighbors, args.fit_iters, args.seed, args.repeats)
    rates.append(sgemm_gflops())
    gflops = max(rates)
    a = report_assign(fit, Q, args.neighbors, res, times, gflops)
    out = args.out or "bench/results/codebooks_assign.json"
    report = {"data": data, "clusters": args.clusters, "threads": args.threads, "machine": machine(), "sgemm_gflops_2048": gflops, "sgemm_gflops_readings": rates, "assign": a, "provenance": provenance(seed=args.seed)}
    write_json(out, report)
    print(f"data: {data}; sgemm {gflops:.0f} GFLOP/s (readings {', '.join(f'{r:.0f}' for r in rates)}); {args.threads} threads; best of {args.repeats}")
    print(f"geodesic fit on {len(fit):,} points: {a['fit']['seconds']:.1f} s, {a['fit']['n_iter']} rounds")
    print(f"{'stage':28s} {'GFLOP':>8s} {'best s':>8s} {'bound s':>8s} {'x bound':>8s}")
    for name, s in [(f"predict ours ({len(Q):,} q)", a["ours_predict"]), (f"faiss IndexFlatL2 k={args.neighbors}", a["faiss_flat_search"])]:
        print(f"{name:28s} {s['flops'] / 1e9:8.1f} {s['seconds']:8.2f} {s['bound_seconds']:8.2f} {s['ratio_to_bound']:8.2f}")
    print(f"ours/faiss {a['time_ours_over_faiss']:.2f}; label agreement with faiss-linked labels {a['label_agreement_with_faiss_links']:.6f}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latents", help="(N, D) float32 .npy; default: the Gaussian-mixture stand-in")
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--neighbors", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (every method once per round); the best is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hnsw", action="store_true", help="also time faiss HNSW and its recall")
    p.add_argument("--geodesic", action="store_true", help="also time GeodesicKMedoids (if present)")
    p.add_argument("--no-knn", action="store_true", help="skip the kNN-graph stage (and --hnsw)")
    p.add_argument("--assign", type=int, metavar="N_QUERIES", help="only time geodesic assignment of this many queries (module docstring)")
    p.add_argument("--fit-size", type=int, default=50_000, help="--assign: points the geodesic codebook is fitted on")
    p.add_argument("--fit-iters", type=int, default=2, help="--assign: medoid rounds of that fit (its quality does not change predict's cost)")
    p.add_argument("--dim", type=int, default=8, help="--assign: stand-in dimension (8: the spatial preset's tokens)")
    p.add_argument("--out", help="JSON path (default bench/results/codebooks.json, or codebooks_assign.json with --assign)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.assign:
        return main_assign(args)
    args.out = args.out or "bench/results/codebooks.json"
    if args.latents:
        X, data = np.ascontiguousarray(np.load(args.latents), dtype=np.float32), f"latents {args.latents}"
    else:
        X = stand_in(seed=args.seed)
        data = "stand-in: 70,000 x 128 float32 from a seeded (seed 0) Gaussian mixture of 10 anisotropic components"
    N, D = X.shape

    rates = [sgemm_gflops()]
    km_res, km_times = run_kmeans(X, args.clusters, args.iters, args.seed, args.repeats, args.threads)
    rates.append(sgemm_gflops())
    if not args.no_knn:
        knn_res, knn_times = run_knn(X, args.neighbors, args.repeats)
        rates.append(sgemm_gflops())
    gflops = max(rates)  # the machine's rate; lower readings mean others were using the CPU
    km = report_kmeans(X, args.clusters, args.iters, km_res, km_times, gflops)
    knn = None if args.no_knn else report_knn(X, args.neighbors, knn_res, knn_times, gflops)
    if args.hnsw and knn:
        knn["hnsw"] = bench_hnsw(X, args.neighbors, knn_res["ours"][1], args.seed)
    report = {
        "data": data,
        "shape": [N, D],
        "clusters": args.clusters,
        "iterations": args.iters,
        "threads": args.threads,
        "machine": machine(),
        "sgemm_gflops_2048": gflops,
        "sgemm_gflops_readings": rates,
        "kmeans": km,
        "knn_graph": knn,
    }
    if args.geodesic:
        report["geodesic"] = bench_geodesic(X, args.clusters, args.neighbors, args.seed)
    report["provenance"] = provenance(seed=args.seed)
    write_json(args.out, report)

    print(f"data: {data}; sgemm {gflops:.0f} GFLOP/s (readings {', '.join(f'{r:.0f}' for r in rates)}); {args.threads} threads; best of {args.repeats}")
    print(f"{'stage':28s} {'GFLOP':>8s} {'best s':>8s} {'bound s':>8s} {'x bound':>8s}")
    rows = [("k-means ours (seed+iters)", km["ours"]), ("k-means faiss", km["faiss"]), ("k-means sklearn (random)", km["sklearn_random_init"])]
    rows += [("kNN ours (knn_exact)", knn["ours"]), ("kNN faiss IndexFlatL2", knn["faiss_flat"])] if knn else []
    for name, s in rows:
        print(f"{name:28s} {s['flops'] / 1e9:8.1f} {s['seconds']:8.2f} {s['bound_seconds']:8.2f} {s['ratio_to_bound']:8.2f}")
    print(f"k-means vs the same-shape matmul alone ({km['same_shape_matmul_seconds']:.2f} s, {km['same_shape_matmul_gflops']:.0f} GFLOP/s): "
          f"ours {km['ours']['ratio_to_same_shape_matmul']:.2f}x, faiss {km['faiss']['ratio_to_same_shape_matmul']:.2f}x, "
          f"sklearn {km['sklearn_random_init']['ratio_to_same_shape_matmul']:.2f}x")
    print(f"k-means: seeding {km['ours']['seeding_seconds']:.2f} s; ours/faiss {km['time_ours_over_faiss']:.2f}, ours/sklearn {km['time_ours_over_sklearn']:.2f}; inertia ours vs faiss {100 * km['inertia_ours_vs_faiss']:+.2f}%, vs sklearn {100 * km['inertia_ours_vs_sklearn']:+.2f}%")
    if knn:
        print(f"kNN k={args.neighbors}: ours/faiss {knn['time_ours_over_faiss']:.2f}; neighbour agreement with faiss {knn['agreement_with_faiss']:.4f}")
    if knn and "hnsw" in knn:
        print(f"HNSW: {knn['hnsw']['seconds']:.2f} s, recall vs exact {knn['hnsw']['recall_vs_exact']:.4f}")
    if report.get("geodesic"):
        g = report["geodesic"]
        print(f"geodesic k-medoids: {g['seconds']:.2f} s, {g['n_iter']} rounds, graph {g['graph']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
