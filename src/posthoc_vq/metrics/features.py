"""A small domain classifier whose penultimate layer is the feature space of FD, KID and precision/recall.

Inception-based FID needs ImageNet weights downloaded at run time, and its numbers on
28x28 grey images say little. Instead, each dataset gets its own small CNN, trained here
with a fixed seed on the dataset's train split (the val and test splits are never seen):

    conv3x3(C->16)-BN-ReLU-maxpool2 -> conv3x3(16->32)-BN-ReLU-maxpool2 -> flatten
    -> Linear(32 * (H/4)^2, 128) = features -> ReLU -> Linear(128, n_classes)

The features are the 128 units of the penultimate layer *before* its ReLU: dense and
roughly Gaussian, so the Fréchet fit of FD sees no dead (always-zero) units. They are
multiplied by one fixed scale, set after training so that the mean squared feature value
on the train split is 1 (so KID's kernel (x.y / d + 1)^3 works at order-1 inner products,
and FD is in units of that mean square). Distances in this space are called
``FD-<dataset>``; they are not comparable with Inception FID.

Saved as ``<dir>/feature_net.safetensors`` plus ``<dir>/feature_net.json`` (architecture,
training settings, test accuracy, checksum, provenance). The default folder is
``$POSTHOC_VQ_FEATURES/<dataset>`` or ``~/.cache/posthoc_vq/features/<dataset>``; it is
created by ``posthoc-vq features train --dataset <dataset>``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional as F

from posthoc_vq.devices import device_record, resolve_device
from posthoc_vq.errors import CheckpointError, ConfigError, NotFoundError
from posthoc_vq.io import load_tensors, read_json, save_tensors, write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.seeding import generator, seed_everything

FEATURES_ENV_VAR = "POSTHOC_VQ_FEATURES"
DEFAULT_FEATURES_ROOT = Path("~/.cache/posthoc_vq/features")
WEIGHTS_FILE = "feature_net.safetensors"
META_FILE = "feature_net.json"
#: Epochs per dataset (a few minutes on 2 cores); others use :data:`DEFAULT_EPOCHS`.
EPOCHS = {"mnist": 4, "fashion-mnist": 5, "digits": 30}
DEFAULT_EPOCHS = 5
#: The splits the network trains on: the project's defaults, so a run with default splits never
#: has its test (or, for datasets without an official test split, its val/test) images in them.
SPLIT_VAL_FRACTION, SPLIT_SEED = 0.1, 0


@dataclass(frozen=True)
class FeatureNetConfig:
    """Architecture and training settings of a feature network (saved in its JSON)."""

    in_channels: int
    image_size: int
    n_classes: int
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 128
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2


class FeatureNet(nn.Module):
    """The domain classifier. ``forward`` gives class logits, ``features`` the penultimate layer.

    ``num_features`` is read by torchmetrics when the module is used as a custom feature extractor.
    """

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        side = config.image_size >> len(config.channels)
        if side < 1:
            raise ConfigError(f"image_size {config.image_size} is too small for {len(config.channels)} pooling stages")
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Linear(c_in * side * side, config.hidden)
        self.head = nn.Linear(config.hidden, config.n_classes)
        self.register_buffer("feature_scale", torch.ones(()))  # set by train_feature_net
        self.config = config
        self.num_features = config.hidden

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) images in [0, 1] -> (B, hidden) penultimate activations (pre-ReLU, unscaled)."""
        return self.hidden(self.body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) images in [0, 1] -> (B, hidden) features: penultimate activations x ``feature_scale``."""
        return self.penultimate(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> (B, n_classes) logits."""
        return self.head(F.relu(self.penultimate(x)))


class FeatureExtractor(nn.Module):
    """``net.features`` as a module (the ``feature`` argument torchmetrics' FID/KID accept)."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


@dataclass
class LoadedFeatureNet:
    """A trained feature network with its record (``meta``: dataset, test accuracy, sha256, ...)."""

    net: FeatureNet
    meta: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        """The metric's name in outputs, ``FD-<dataset>``."""
        return f"FD-{self.meta['dataset']}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, hidden) float32 and predicted classes (N,) int64 of images (N, C, H, W) in [0, 1]."""
        self.net.eval()
        feats, preds = [], []
        for i in range(0, len(images), batch_size):
            h = self.net.penultimate(images[i : i + batch_size])
            feats.append(h * self.net.feature_scale)
            preds.append(self.net.head(F.relu(h)).argmax(1))
        return torch.cat(feats), torch.cat(preds)

    def check_images(self, images: torch.Tensor, what: str) -> None:
        """Raise ConfigError if ``images`` (N, C, H, W) do not have the shape the network was trained on."""
        c = self.net.config
        if tuple(images.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ConfigError(
                f"{what} are {tuple(images.shape[1:])} but the feature network {self.path} was trained on "
                f"{self.meta['dataset']} images {(c.in_channels, c.image_size, c.image_size)}; "
                f"train one for this dataset with `posthoc-vq features train --dataset <name>`"
            )


def default_features_dir(dataset: str) -> Path:
    """``$POSTHOC_VQ_FEATURES/<dataset>``, else ``~/.cache/posthoc_vq/features/<dataset>``."""
    root = os.environ.get(FEATURES_ENV_VAR) or DEFAULT_FEATURES_ROOT
    return Path(root).expanduser() / dataset


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of images (N, C, H, W) in [0, 1] whose argmax logit equals the label (N,)."""
    net.eval()
    correct = sum(int((net(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum()) for i in range(0, len(images), batch_size))
    return correct / len(images)


def train_feature_net(
    dataset: str,
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    seed: int = 0,
    splits: Any,
    split: dict[str, Any] | None = None,
    progress: bool = True,
    console: Console | None = None,
    device: str | torch.device | None = "cpu",
) -> LoadedFeatureNet:
    """Train the feature network of ``dataset`` on its train split and save it.

    Parameters
    ----------
    dataset : the dataset's name (its default epochs and folder; recorded in the JSON).
    out_dir : folder for ``feature_net.{safetensors,json}`` (default :func:`default_features_dir`).
    epochs : passes over the train split (default :data:`EPOCHS` of the dataset).
    seed : initialisation and shuffling seed; the same seed gives the same weights on CPU.
    splits : its loaded splits (a :class:`~posthoc_vq.data.DatasetSplits`); this module loads no dataset:
        :func:`posthoc_vq.evaluation.perceptual.train_feature_net` loads them with :data:`SPLIT_VAL_FRACTION` and
        :data:`SPLIT_SEED` (``posthoc-vq features train``).
    split : how ``splits`` were made (``val_fraction``, ``split_seed``), recorded as ``split`` in the JSON; None: the
        caller's own splits.
    device : where to train ('cpu', the default, 'auto', 'cuda', 'cuda:N', 'mps'); the network is
        initialised and the data order drawn on CPU; the saved weights are CPU tensors, and the
        device is recorded in the JSON.

    Returns
    -------
    LoadedFeatureNet, whose ``meta`` holds ``test_accuracy`` (fraction in [0, 1]) and ``seconds``.
    """
    out = Path(out_dir) if out_dir is not None else default_features_dir(dataset)
    device = resolve_device(device)
    x_train, y_train = splits.train.to_tensor().to(device), torch.from_numpy(splits.train.labels).to(device)
    x_test, y_test = splits.test.to_tensor().to(device), torch.from_numpy(splits.test.labels).to(device)
    config = FeatureNetConfig(
        in_channels=splits.channels, image_size=splits.image_size, n_classes=splits.num_classes,
        epochs=epochs if epochs is not None else EPOCHS.get(dataset, DEFAULT_EPOCHS), seed=seed,
    )
    torch.set_num_threads(config.threads)
    seed_everything(seed)
    net = FeatureNet(config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_batches = math.ceil(len(x_train) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * n_batches)
    console = console or Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not progress,
    )
    tic = time.perf_counter()
    with bar:
        task = bar.add_task(f"feature net {dataset}", total=config.epochs * n_batches, loss=float("nan"))
        for epoch in range(config.epochs):
            net.train()
            for idx in _batches(len(x_train), config.batch_size, generator(seed, "feature-shuffle", epoch)):
                loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(task, advance=1, loss=loss.item())
    seconds = time.perf_counter() - tic
    net.eval()
    with torch.no_grad():
        mean_square = torch.cat([net.penultimate(x_train[i : i + 1000]).square() for i in range(0, len(x_train), 1000)]).mean()
        net.feature_scale.fill_(float(mean_square.rsqrt()))
    meta = {
        "dataset": dataset,
        "metric_name": f"FD-{dataset}",
        "config": asdict(config),
        "split": split,
        "steps": config.epochs * n_batches,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "train_accuracy": accuracy(net, x_train, y_train),
        "test_accuracy": accuracy(net, x_test, y_test),
        "seconds": seconds,
        **device_record(device),
        "features": "penultimate layer (Linear hidden units, before ReLU) x feature_scale",
        "feature_scale": float(net.feature_scale),
    }
    save_feature_net(out, net, meta)
    return load_feature_net(out, dataset=dataset)


def save_feature_net(out_dir: str | Path, net: FeatureNet, meta: dict[str, Any]) -> Path:
    """Write ``feature_net.safetensors`` then ``feature_net.json`` (with sha256 and provenance); returns the JSON path."""
    out = Path(out_dir)
    sha = save_tensors(out / WEIGHTS_FILE, dict(net.state_dict()))
    return write_json(out / META_FILE, {**meta, "sha256": sha, "provenance": provenance(seed=net.config.seed)})


def load_feature_net(path: str | Path, *, dataset: str | None = None) -> LoadedFeatureNet:
    """Load a saved feature network from its folder (or either file's path).

    Parameters
    ----------
    dataset : if given, the network must have been trained on this dataset.

    Raises
    ------
    CheckpointError : missing, corrupt or mismatched files, or a network of another dataset;
        the message says which command creates the right one.
    """
    folder = Path(path)
    if folder.suffix in (".json", ".safetensors"):
        folder = folder.parent
    meta_path = folder / META_FILE
    if not meta_path.exists():
        hint = dataset or "<dataset>"
        raise NotFoundError(
            f"no feature network at {folder} ({META_FILE} missing); create it with "
            f"`posthoc-vq features train --dataset {hint} --out {folder}`, or pass --features DIR"
        )
    meta = read_json(meta_path, what="feature network record")
    if dataset is not None and meta.get("dataset") != dataset:
        raise NotFoundError(
            f"{meta_path} is a feature network for '{meta.get('dataset')}', not '{dataset}'; "
            f"train one with `posthoc-vq features train --dataset {dataset}`"
        )
    tensors = load_tensors(folder / WEIGHTS_FILE, sha256=meta.get("sha256"))
    try:
        config = FeatureNetConfig(**{**meta["config"], "channels": tuple(meta["config"]["channels"])})
        net = FeatureNet(config)
        net.load_state_dict(tensors)
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{meta_path} and {folder / WEIGHTS_FILE} do not describe a valid feature network ({err}); retrain it") from None
    net.eval().requires_grad_(False)
    return LoadedFeatureNet(net, meta, folder)
