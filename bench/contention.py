"""Training speed on a shared CPU: the trainer's epoch time alone and beside other work, per OpenMP wait policy.

Measured in one run, each timing in a fresh process (OpenMP reads its wait policy when torch loads):

* scenarios: ``quiet`` (nothing else of ours runs), ``train2`` (beside a second 2-thread training of the
  same model, with the same wait policy: two posthoc-vq processes), ``busy1`` (beside one busy
  single-thread Python loop);
* policies: ``runtime`` (OpenMP's own behaviour, ``POSTHOC_VQ_WAIT_POLICY=off``), ``default`` (what
  ``import posthoc_vq`` sets: :mod:`posthoc_vq.waitpolicy`, which looks at the load when the process
  starts: in ``train2`` the background training starts on a quiet CPU and keeps the runtime's spin,
  the measured one starts beside it), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``) and
  ``spin=N`` (``GOMP_SPINCOUNT=N``) for each ``--spincounts``;
* the machine's sgemm rate (2 threads) at the start and the end, as the compute reference.

The timed work is ``Trainer.train_epoch`` of ``--preset`` on ``--images`` train images
(``data.max_train_images``): one warm-up epoch, then ``--epochs`` epochs, stopped early after
``--max-seconds`` (a collapsed configuration would otherwise take minutes). Rounds (``--rounds``)
run every policy once per scenario, so that outside load hits them alike; the best round counts.

Targets (issue 16): ``train2`` epoch <= 2.5x the quiet epoch; ``busy1`` throughput >= 0.5x quiet;
the default's quiet epoch <= 1.03x the runtime's quiet epoch. Writes JSON (``--out``) and prints
the ratios.

    python bench/contention.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TARGETS = {"train2_slowdown_max": 2.5, "busy1_throughput_min": 0.5, "default_quiet_cost_max": 1.03}


# ----------------------------------------------------------------------------- child processes


def _child_train(args: argparse.Namespace) -> None:
    """Time (or, with --forever, just run) trainer epochs; prints one JSON line."""
    import tempfile

    from posthoc_vq.waitpolicy import wait_policy_record  # posthoc_vq first: its default applies before torch loads

    import torch

    from posthoc_vq.config import load_run_config
    from posthoc_vq.train import Trainer

    config = load_run_config(args.preset, [f"data.data_dir={args.data_dir}", f"data.max_train_images={args.images}",
                                           f"train.threads={args.threads}"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        trainer.step = 0
        trainer.train_epoch(0)  # warm-up
        if args.forever:
            print("ready", flush=True)
            epoch = 1
            while True:
                trainer.train_epoch(epoch)
                epoch += 1
        times = []
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            tic = time.perf_counter()
            trainer.train_epoch(epoch)
            times.append(time.perf_counter() - tic)
            if time.perf_counter() - start > args.max_seconds:
                break
    print(json.dumps({"seconds": times, "torch_threads": torch.get_num_threads(), "wait_policy": wait_policy_record(),
                      "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}}), flush=True)


def _child_busy(args: argparse.Namespace) -> None:
    """One busy thread: a pure-Python loop (no OpenMP), forever."""
    print("ready", flush=True)
    x = 0
    while True:
        for i in range(1_000_000):
            x ^= i


def _child_sgemm(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent))
    import posthoc_vq  # noqa: F401 - the default wait policy, as in training

    from common import sgemm_gflops

    print(json.dumps({"gflops": sgemm_gflops(threads=args.threads)}), flush=True)


# ----------------------------------------------------------------------------- driver


def policy_env(policy: str) -> dict[str, str]:
    """The environment of one policy: ours, with the wait-policy variables replaced."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "POSTHOC_VQ_WAIT_POLICY", "POSTHOC_VQ_WAIT_DEFAULT")}
    src = str(HERE.parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if policy == "runtime":
        env["POSTHOC_VQ_WAIT_POLICY"] = "off"
    elif policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
    elif policy != "default":
        raise ValueError(f"unknown policy {policy!r}")
    return env


def child_cmd(args: argparse.Namespace, role: str, *extra: str) -> list[str]:
    return [sys.executable, str(HERE), "--child", role, "--preset", args.preset, "--data-dir", args.data_dir, "--images", str(args.images),
            "--threads", str(args.threads), "--epochs", str(args.epochs), "--max-seconds", str(args.max_seconds), *extra]


def start_background(args: argparse.Namespace, scenario: str, policy: str) -> subprocess.Popen | None:
    if scenario == "quiet":
        return None
    role, extra = ("busy", ()) if scenario == "busy1" else ("train", ("--forever",))
    proc = subprocess.Popen(child_cmd(args, role, *extra), env=policy_env(policy), stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # wait until it works (the training one has loaded data and run its warm-up)
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"background {scenario} did not start")
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(args: argparse.Namespace, scenario: str, policy: str) -> dict:
    background = start_background(args, scenario, policy)
    try:
        out = subprocess.run(child_cmd(args, "train"), env=policy_env(policy), capture_output=True, text=True, check=True)
    finally:
        stop(background)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sgemm(args: argparse.Namespace) -> float:
    out = subprocess.run(child_cmd(args, "sgemm"), env=policy_env("default"), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["gflops"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--data-dir", default=str(HERE.parents[2] / "shared" / "datasets"))
    p.add_argument("--images", type=int, default=2048, help="train images per epoch (data.max_train_images)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each training process")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after one warm-up)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="stop a measurement's timed epochs after this long")
    p.add_argument("--rounds", type=int, default=1, help="rounds over all policies and scenarios (best round counts)")
    p.add_argument("--policies", default="runtime,default,passive", help="comma list: runtime, default, passive, spin=N")
    p.add_argument("--spincounts", default="1000", help="also time GOMP_SPINCOUNT=N for each N (comma list; '' for none)")
    p.add_argument("--scenarios", default="quiet,train2,busy1")
    p.add_argument("--out", default="bench/results/contention.json")
    p.add_argument("--child", choices=("train", "busy", "sgemm"), help=argparse.SUPPRESS)
    p.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        {"train": _child_train, "busy": _child_busy, "sgemm": _child_sgemm}[args.child](args)
        return 0

    policies = [x for x in args.policies.split(",") if x] + [f"spin={n}" for n in args.spincounts.split(",") if n]
    policies = list(dict.fromkeys(policies))
    scenarios = [x for x in args.scenarios.split(",") if x]
    if "quiet" not in scenarios:
        p.error("--scenarios must include quiet (the ratios' reference)")
    wall = time.perf_counter()
    gflops_start = sgemm(args)
    raw: dict[str, dict[str, list[dict]]] = {s: {pol: [] for pol in policies} for s in scenarios}
    for r in range(args.rounds):
        for scenario in scenarios:
            for policy in policies:
                res = measure(args, scenario, policy)
                raw[scenario][policy].append(res)
                print(f"round {r + 1} {scenario:6s} {policy:12s} epoch {statistics.median(res['seconds']):7.2f} s "
                      f"({len(res['seconds'])} timed)", flush=True)
    gflops_end = sgemm(args)

    # per measurement the median epoch; per configuration the best round
    epoch = {s: {pol: min(statistics.median(m["seconds"]) for m in raw[s][pol]) for pol in policies} for s in scenarios}
    quiet = epoch["quiet"]
    ratios: dict[str, dict[str, float]] = {}
    verdict: dict[str, dict[str, bool]] = {}
    for pol in policies:
        ratios[pol] = {"quiet_vs_runtime_quiet": quiet[pol] / quiet["runtime"]} if "runtime" in quiet else {}
        if "train2" in epoch:
            ratios[pol]["train2_slowdown"] = epoch["train2"][pol] / quiet[pol]
        if "busy1" in epoch:
            ratios[pol]["busy1_throughput"] = quiet[pol] / epoch["busy1"][pol]
        v = {}
        if "train2_slowdown" in ratios[pol]:
            v["train2"] = ratios[pol]["train2_slowdown"] <= TARGETS["train2_slowdown_max"]
        if "busy1_throughput" in ratios[pol]:
            v["busy1"] = ratios[pol]["busy1_throughput"] >= TARGETS["busy1_throughput_min"]
        if "quiet_vs_runtime_quiet" in ratios[pol]:
            v["quiet_cost"] = ratios[pol]["quiet_vs_runtime_quiet"] <= TARGETS["default_quiet_cost_max"]
        verdict[pol] = v

    sys.path.insert(0, str(HERE.parents[1] / "src"))
    from posthoc_vq.io import write_json
    from posthoc_vq.provenance import provenance
    from posthoc_vq.waitpolicy import BUSY_OTHERS

    from common import machine

    report = {
        "preset": args.preset, "images_per_epoch": args.images, "threads": args.threads, "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "default_rule": f"passive when >= {BUSY_OTHERS} other runnable task(s) at start, else the runtime's own spin", "policies": policies, "scenarios": scenarios, "targets": TARGETS,
        "machine": machine(), "sgemm_gflops_2048": {"start": gflops_start, "end": gflops_end},
        "epoch_seconds": epoch, "ratios": ratios, "meets_targets": verdict,
        "wait_policy_used": {pol: raw["quiet"][pol][0]["wait_policy"] for pol in policies},
        "raw_seconds": {s: {pol: [m["seconds"] for m in raw[s][pol]] for pol in policies} for s in scenarios},
        "benchmark_seconds": time.perf_counter() - wall,
        "provenance": provenance(seed=None),
    }
    write_json(args.out, report)

    print(f"sgemm {gflops_start:.1f} / {gflops_end:.1f} GFLOP/s (start / end); {args.images} images per epoch, {args.threads} threads")
    print(f"{'policy':12s} {'quiet s':>8s} {'vs runtime':>10s} {'train2 x':>9s} {'busy1 thr':>9s}  targets: "
          f"quiet <= {TARGETS['default_quiet_cost_max']}, train2 <= {TARGETS['train2_slowdown_max']}, busy1 >= {TARGETS['busy1_throughput_min']}")
    for pol in policies:
        r = ratios[pol]
        cells = [f"{quiet[pol]:8.2f}", f"{r.get('quiet_vs_runtime_quiet', float('nan')):10.3f}",
                 f"{r.get('train2_slowdown', float('nan')):9.2f}", f"{r.get('busy1_throughput', float('nan')):9.2f}"]
        ok = " ".join(f"{k}:{'ok' if v else 'MISS'}" for k, v in verdict[pol].items())
        print(f"{pol:12s} {' '.join(cells)}  {ok}")
    print(f"wrote {args.out} ({report['benchmark_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
