"""Classifier two-sample test (C2ST; Lopez-Paz and Oquab, ICLR 2017): can a small CNN tell a set from real photos?

A method's outputs are "fake", real photos of the same dataset are "real". For every seed:

1. the identities of both sets are split into train and test (an identity never sits on both sides);
2. every image of both classes gets the same kind of random JPEG round-trip (quality 70-95), so compression
   cannot give either class away;
3. a 4-convolution CNN is trained on the train identities (classes balanced by subsampling, random flips) and its
   balanced accuracy is measured on the test identities.

0.5 means the CNN cannot tell the two sets apart; 1.0 means it always can. The whole crop is judged, and windows
on the face edge (:mod:`augmentor.evaluation.bands`), where seams and halos live. The seed fixes the split, the
JPEG qualities, the initial weights and the batch order, so two methods judged with the same seeds differ by their
pixels only (paired over seeds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmentor.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class C2STConfig:
    """How the judge is trained. Defaults: about 10-25 s per (method, region, seed) for 1,000 + 1,000 images on
    a 2-core CPU (docs/evaluation.md)."""

    seeds: tuple[int, ...] = (0, 1, 2)  # one identity split, JPEG draw, init and batch order per seed
    train_share: float = 0.7  # share of identities whose images train the CNN; the rest test it
    epochs: int = 6  # passes over the training images
    batch_size: int = 64
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 0)
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 64, 64)  # channels of the four 3x3 convolutions (each halves the size)
    jpeg_quality: tuple[int, int] = (70, 95)  # inclusive range of the random JPEG round-trip applied to both classes
    threads: int | None = None  # torch threads while training (None: leave torch's setting)


@dataclass
class C2STResult:
    """Test accuracy of one judge over its seeds."""

    accuracies: list[float]  # balanced test accuracy per seed
    num_train: list[int] = field(default_factory=list)  # training images per seed (both classes)
    num_test: list[int] = field(default_factory=list)  # test images per seed (both classes)
    seconds: float = 0.0

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    def interval(self) -> tuple[float, float]:
        """95% t-interval of the mean over seeds (the seed spread, which includes the split and the training)."""
        return t_interval(np.asarray(self.accuracies))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (NaNs for fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


class JudgeNet(nn.Module):
    """Four stride-2 3x3 convolutions with batch norm and ReLU, global average pooling, one logit."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B] logits
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def jpeg_roundtrip(images: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Each uint8 ``[N, H, W, 3]`` RGB image encoded as JPEG at its quality and decoded again."""
    import cv2

    out = np.empty_like(images)
    for i, (image, quality) in enumerate(zip(images, qualities)):
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("JPEG encoding failed")
        out[i] = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def identity_split(identities: np.ndarray, train_share: float, rng: np.random.Generator) -> np.ndarray:
    """``[N]`` bool, True for images whose identity is drawn into the training side.

    Raises:
        ValueError: fewer than two identities (no split possible).
    """
    names = np.unique(np.asarray(identities, dtype=str))
    if len(names) < 2:
        raise InputError(f"a C2ST needs at least two identities to split by, got {len(names)}")
    shuffled = rng.permutation(names)
    num_train = int(np.clip(round(train_share * len(names)), 1, len(names) - 1))
    return np.isin(np.asarray(identities, dtype=str), shuffled[:num_train])


def _balanced(index: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return index if len(index) <= count else np.sort(rng.choice(index, count, replace=False))


def _tensor(images: np.ndarray) -> torch.Tensor:  # uint8 [N, H, W, 3] -> [N, 3, H, W] in [-1, 1]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def train_judge(x: torch.Tensor, y: torch.Tensor, config: C2STConfig, seed: int) -> JudgeNet:
    """A :class:`JudgeNet` fitted to tell ``y == 1`` from ``y == 0`` in ``x`` ``[N, 3, H, W]`` (random flips)."""
    torch.manual_seed(seed)
    net = JudgeNet(config.widths)
    steps_per_epoch = max(1, int(np.ceil(len(x) / config.batch_size)))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:  # batch norm needs two samples
                continue
            images = x[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            loss = F.binary_cross_entropy_with_logits(net(images), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    recalibrate_batch_norm(net, x, config.batch_size)
    return net.eval()


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Re-estimate the batch-norm statistics as exact averages over ``x`` with the final weights (after a short
    training the running averages still lag the weights, which can push every test logit to one side)."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for start in range(0, len(x), batch_size):
        net(x[start : start + batch_size])


@torch.inference_mode()
def balanced_accuracy(net: JudgeNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Mean of the two classes' accuracies (0.5 = chance, whatever the class sizes)."""
    predicted = torch.cat([net(x[i : i + batch_size]) > 0 for i in range(0, len(x), batch_size)])
    correct = predicted == (y > 0.5)
    return float(np.mean([correct[y == c].float().mean().item() for c in (0.0, 1.0)]))


def one_seed(
    real: np.ndarray, fake: np.ndarray, real_ids: np.ndarray, fake_ids: np.ndarray, config: C2STConfig, seed: int
) -> tuple[float, int, int]:
    """Balanced test accuracy of one judge, and its train and test sizes."""
    rng = np.random.default_rng(seed)
    images = np.concatenate([real, fake])
    labels = np.concatenate([np.zeros(len(real)), np.ones(len(fake))]).astype(np.float32)
    train = identity_split(np.concatenate([real_ids, fake_ids]).astype(str), config.train_share, rng)
    low, high = config.jpeg_quality
    qualities = rng.integers(low, high + 1, size=len(images))  # both classes drawn from one distribution
    images = jpeg_roundtrip(images, qualities)
    sides = {}
    for name, side in (("train", train), ("test", ~train)):
        index = [np.flatnonzero(side & (labels == c)) for c in (0.0, 1.0)]
        if min(len(i) for i in index) == 0:
            raise InputError(f"the identity split left no {name} image in one class; use more identities")
        if name == "train":  # balance the training classes so the judge cannot win by a prior
            count = min(len(i) for i in index)
            index = [_balanced(i, count, rng) for i in index]
        sides[name] = np.concatenate(index)
    x_train, y_train = _tensor(images[sides["train"]]), torch.from_numpy(labels[sides["train"]])
    net = train_judge(x_train, y_train, config, seed)
    x_test, y_test = _tensor(images[sides["test"]]), torch.from_numpy(labels[sides["test"]])
    return balanced_accuracy(net, x_test, y_test), len(sides["train"]), len(sides["test"])


def c2st(
    real: np.ndarray,
    fake: np.ndarray,
    real_identities,
    fake_identities,
    config: C2STConfig | None = None,
) -> C2STResult:
    """Classifier two-sample test of ``fake`` against ``real`` over ``config.seeds``.

    Args:
        real: uint8 ``[N, H, W, 3]`` real photos.
        fake: uint8 ``[M, H, W, 3]`` images to judge (same H, W).
        real_identities, fake_identities: ``[N]`` and ``[M]`` identity labels; the train/test split is by identity
            over both sets together.
        config: Training settings and seeds.

    Returns:
        Balanced test accuracy per seed.

    Raises:
        ValueError: mismatched shapes, or too few identities to split.
    """
    config = config or C2STConfig()
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 4 or real.shape[1:] != fake.shape[1:] or real.shape[-1] != 3 or real.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] sets of one size, got {real.dtype} {real.shape}, {fake.shape}")
    if len(real_identities) != len(real) or len(fake_identities) != len(fake):
        raise ValueError("one identity per image is needed in each set")
    start, threads = time.perf_counter(), torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        runs = [
            one_seed(real, fake, np.asarray(real_identities), np.asarray(fake_identities), config, s)
            for s in config.seeds
        ]
    finally:
        torch.set_num_threads(threads)
    accuracies, num_train, num_test = (list(v) for v in zip(*runs))
    return C2STResult(accuracies, num_train, num_test, round(time.perf_counter() - start, 2))
