"""Training throughput of the trainer against a plain PyTorch loop and the compute bound.

Measured in one run, on the same model, batch size and data:

* trainer: ``Trainer.train_epoch`` (shuffling, NaN checks, loss bookkeeping) on a subset of train;
* plain loop: the minimal loop (index, forward, loss, backward, Adam step) with nothing else;
* bound: training FLOPs per image (forward counted by ``torch.utils.flop_counter``, x3 for
  forward + backward) divided by this machine's sgemm rate on a 2048x2048 matmul;
* bf16: the trainer with ``train.precision=bf16`` (autocast), its speed and its effect on test
  PSNR after the same number of epochs as an fp32 run (``--epochs``);
* ``--quantizer vq,rvq,fsq``: the trainer of the same model with each jointly trained quantizer
  (``model.quantizer``; ``--quantizer-set`` for its keys, e.g. model.codebook_size=1024), its images/s
  against the continuous trainer's in the same run.

Each timing runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
Writes JSON (``--out``) and prints the ratios.

    python bench/train_throughput.py --preset fashion-mnist --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from posthoc_vq.config import load_run_config
from posthoc_vq.data import DatasetSplits, ImageSet, load_dataset
from common import in_process, machine, sgemm_gflops
from posthoc_vq.io import write_json
from posthoc_vq.provenance import provenance


def subset(splits: DatasetSplits, n: int) -> DatasetSplits:
    t = splits.train
    return DatasetSplits(splits.name, ImageSet(t.images[:n], t.labels[:n]), splits.val, splits.test, splits.num_classes)


def train_flops_per_image(config, splits) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from posthoc_vq.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        model = Trainer(config, tmp, splits=splits, progress=False).model
    x = torch.rand(config.train.batch_size, splits.channels, splits.image_size, splits.image_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return 3 * counter.get_total_flops() / len(x)


def _time_trainer(config, splits, repeats, queue):
    from posthoc_vq.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, splits=splits, progress=False)
        trainer.step = 0
        trainer.train_epoch(0)  # warm-up
        times = []
        for r in range(repeats):
            tic = time.perf_counter()
            trainer.train_epoch(r + 1)
            times.append(time.perf_counter() - tic)
    queue.put({"seconds": times, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _time_plain_loop(config, splits, repeats, queue):
    """The reference: nothing but the training step itself."""
    from posthoc_vq.models import build_vae
    from posthoc_vq.train.trainer import images_tensor, resolve_model_config

    torch.set_num_threads(config.train.threads)
    config = resolve_model_config(config, splits)
    torch.manual_seed(config.seed)
    model = build_vae(config.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    data = images_tensor(splits, "train")
    bs = config.train.batch_size

    def epoch(seed):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        for i in range(0, len(data), bs):
            x = data[order[i : i + bs]].float().div_(255.0)
            loss = model.loss(x, model(x)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch(0)
    times = []
    for r in range(repeats):
        tic = time.perf_counter()
        epoch(r + 1)
        times.append(time.perf_counter() - tic)
    queue.put({"seconds": times, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _train_and_evaluate(config, data_dir, queue):
    from posthoc_vq.evaluation import evaluate_continuous
    from posthoc_vq.train import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, tmp, progress=False)
        quality = evaluate_continuous(tmp, data_dir=data_dir).continuous
    queue.put({"seconds": result.seconds, "epochs": result.epochs, "psnr_db": quality.psnr_db.to_json(), "ssim": quality.ssim.to_json()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    p.add_argument("--images", type=int, default=12_800, help="train images per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs of the fp32 vs bf16 quality comparison (0 skips it)")
    p.add_argument("--quantizer", default="none", help="also time the trainer with these trained quantizers: a comma list of vq, rvq, fsq")
    p.add_argument("--quantizer-set", action="append", default=[], metavar="KEY=VALUE",
                   help="quantizer keys for every --quantizer (default: vq model.codebook_size=1024; rvq also model.stages=2; fsq model.fsq_levels=[8,8,4,4])")
    p.add_argument("--out", default="bench/results/train_throughput.json")
    args = p.parse_args(argv)

    config = load_run_config(args.preset, [f"data.data_dir={args.data_dir}"])
    threads = config.train.threads
    splits = subset(load_dataset(config.data.name, args.data_dir), args.images)
    bf16 = config.model_copy(update={"train": config.train.model_copy(update={"precision": "bf16"})})

    gflops_start = sgemm_gflops(threads=threads)
    flops = train_flops_per_image(config, splits)
    res = {
        "plain_loop": in_process(_time_plain_loop, config, splits, args.repeats),
        "trainer_fp32": in_process(_time_trainer, config, splits, args.repeats),
        "trainer_bf16": in_process(_time_trainer, bf16, splits, args.repeats),
    }
    quantizers = [q for q in args.quantizer.split(",") if q and q != "none"]
    defaults = {"vq": ["model.codebook_size=1024"], "rvq": ["model.codebook_size=1024", "model.stages=2"], "fsq": ["model.fsq_levels=[8,8,4,4]"]}
    for q in quantizers:
        if q not in defaults:
            p.error(f"--quantizer: unknown quantizer '{q}'; choose from vq, rvq, fsq")
        q_config = load_run_config(args.preset, [f"data.data_dir={args.data_dir}", f"model.quantizer={q}", *(args.quantizer_set or defaults[q])])
        res[f"trainer_{q}"] = in_process(_time_trainer, q_config, splits, args.repeats)
    ips = {k: args.images / min(v["seconds"]) for k, v in res.items()}
    # the machine's rate is the better of two measurements: a load spike during one would understate the bound
    gflops = max(gflops_start, sgemm_gflops(threads=threads))
    bound_ips = gflops * 1e9 / flops
    report = {
        "preset": args.preset,
        "images_per_epoch": args.images,
        "batch_size": config.train.batch_size,
        "threads": threads,
        "machine": machine(),
        "sgemm_gflops_2048": gflops,
        "sgemm_gflops_2048_at_start": gflops_start,
        "train_flops_per_image": flops,
        "images_per_second": ips,
        "bound_images_per_second": bound_ips,
        "peak_rss_mib": {k: v["maxrss_mib"] for k, v in res.items()},
        "ratios": {
            "trainer_fp32_vs_plain_loop": ips["trainer_fp32"] / ips["plain_loop"],
            "trainer_bf16_vs_fp32": ips["trainer_bf16"] / ips["trainer_fp32"],
            "trainer_fp32_vs_bound": ips["trainer_fp32"] / bound_ips,
            **{f"trainer_{q}_vs_fp32": ips[f"trainer_{q}"] / ips["trainer_fp32"] for q in quantizers},
        },
        "quantizers": {q: args.quantizer_set or defaults[q] for q in quantizers},
        "raw_seconds": {k: v["seconds"] for k, v in res.items()},
    }
    if args.epochs:
        fixed = [f"data.data_dir={args.data_dir}", f"train.epochs={args.epochs}", "train.early_stopping=false"]
        quality = {prec: in_process(_train_and_evaluate, load_run_config(args.preset, fixed + [f"train.precision={prec}"]), args.data_dir) for prec in ("fp32", "bf16")}
        report["quality_after_equal_epochs"] = quality
        report["bf16_psnr_change_db"] = quality["bf16"]["psnr_db"]["mean"] - quality["fp32"]["psnr_db"]["mean"]
    report["provenance"] = provenance(seed=config.seed)
    write_json(args.out, report)

    r = report["ratios"]
    print(f"sgemm {gflops:.1f} GFLOP/s; training {flops / 1e6:.1f} MFLOP/image -> bound {bound_ips:.0f} img/s")
    for k, v in ips.items():
        print(f"{k:14s} {v:8.0f} img/s   peak RSS {report['peak_rss_mib'][k]:.0f} MiB")
    print(f"trainer / plain loop = {r['trainer_fp32_vs_plain_loop']:.3f}   bf16 / fp32 = {r['trainer_bf16_vs_fp32']:.3f}   trainer / bound = {r['trainer_fp32_vs_bound']:.3f}")
    for q in quantizers:
        print(f"trainer with a trained {q} ({' '.join(report['quantizers'][q])}) / continuous trainer = {r[f'trainer_{q}_vs_fp32']:.3f}")
    if args.epochs:
        q = report["quality_after_equal_epochs"]
        print(f"test PSNR after {args.epochs} epochs: fp32 {q['fp32']['psnr_db']['mean']:.2f} dB, bf16 {q['bf16']['psnr_db']['mean']:.2f} dB (change {report['bf16_psnr_change_db']:+.2f} dB)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
