"""The embedded task: scikit-learn's handwritten digits, and the LeNets the papers compress.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1,797 8x8 grey images of the digits
0-9, pixel values 0..16; no download). :func:`digits_task` scales the pixels to [0, 1],
upsamples them bilinearly to ``image_size`` (28 by default, MNIST's size, so LeNet-5 and
LeNet-300-100 keep their paper shapes), normalises with the training split's mean and std, and
splits them with a fixed seed (``test_fraction`` held out, stratified by class). Images are
``(N, 1, S, S)`` float32; :func:`lenet300_100` flattens them itself.

``lenet300_100`` (784-300-100-10, ReLU) and ``lenet5`` (conv 6@5x5 pad 2 -> pool -> conv 16@5x5
-> pool -> 120 -> 84 -> 10, ReLU, max-pool; the Caffe variant Han et al. 2016 compress has
20/50 channels and a 500 hidden layer, ``caffe=True`` builds it) are the models of
Deep Compression (Han, Mao, Dally 2016) Table 1-3.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core import checks


@dataclass(frozen=True)
class Task:
    """An image-classification task held in memory: train and test tensors."""

    name: str
    x_train: torch.Tensor  # (N, C, S, S) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def batches(self, batch_size: int, *, train: bool = True, seed: int | None = None) -> Iterator[tuple]:
        """Mini-batches of (images, labels); shuffled with ``seed`` when given."""
        x, y = (self.x_train, self.y_train) if train else (self.x_test, self.y_test)
        order = torch.arange(len(x))
        if seed is not None:
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.from_numpy(data.images).float(), torch.from_numpy(data.target).long()


def digits_task(*, image_size: int = 28, test_fraction: float = 0.25, seed: int = 0) -> Task:
    """scikit-learn's 8x8 digits upsampled to ``image_size`` with a fixed, stratified split."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size: expected an int >= 8, got {image_size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}")
    raw, labels = _digits_arrays()
    images = raw.div(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    # stratified split: per class, a seeded permutation, the first test_fraction held out
    gen = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = round(len(members) * test_fraction)
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    train_idx = torch.cat(train_idx).sort().values
    test_idx = torch.cat(test_idx).sort().values
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return Task(
        name=f"digits{image_size}",
        x_train=images[train_idx].contiguous(),
        y_train=labels[train_idx].contiguous(),
        x_test=images[test_idx].contiguous(),
        y_test=labels[test_idx].contiguous(),
        num_classes=10,
    )


def lenet300_100(num_classes: int = 10, in_features: int = 784, width: float = 1.0) -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998): in -> 300 -> 100 -> classes, ReLU; flattens its input."""
    h1, h2 = max(1, round(300 * width)), max(1, round(100 * width))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, h1),
        nn.ReLU(),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Linear(h2, num_classes),
    )


def lenet5(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, *, caffe: bool = False) -> nn.Sequential:
    """LeNet-5 for 28x28 inputs; ``caffe=True`` is the 20-50-500 variant of Han et al. 2016."""
    c1, c2, fc = (20, 50, (500,)) if caffe else (6, 16, (120, 84))
    c1, c2 = max(1, round(c1 * width)), max(1, round(c2 * width))
    fc = tuple(max(1, round(f * width)) for f in fc)
    pad = 0 if caffe else 2  # 28 -> (pad 2) 28 -> pool 14 -> 10 -> pool 5; caffe: 28 -> 24 -> 12 -> 8 -> 4
    side = 4 if caffe else 5
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, c1, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    prev = c2 * side * side
    for f in fc:
        layers += [nn.Linear(prev, f), nn.ReLU()]
        prev = f
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


MODELS = {"lenet300_100": lenet300_100, "lenet5": lenet5}


def train(
    model: nn.Module,
    task: Task,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    loss_fn=None,
    optimizer: torch.optim.Optimizer | None = None,
    after_step=None,
    progress: bool = True,
    desc: str = "train",
) -> nn.Module:
    """Adam (or ``optimizer``) on cross-entropy (or ``loss_fn(model, x, y) -> loss``) for ``epochs``.

    ``after_step(model)`` runs after every optimizer step (re-applying pruning masks, say).
    """
    from tqdm.auto import tqdm

    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs: expected an int >= 0, got {epochs!r}")
    checks.check_positive(batch_size, "batch_size")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    model.train()
    steps = epochs * -(-len(task.x_train) // batch_size)
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            for x, y in task.batches(batch_size, seed=seed * 1000 + epoch):
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y) if loss_fn is None else loss_fn(model, x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step(model)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, *, batch_size: int = 512, train: bool = False) -> float:
    """Top-1 accuracy in [0, 1] on the test split (or the train split)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = total = 0
    for x, y in task.batches(batch_size, train=train):
        out = model(x.to(device))
        correct += (out.argmax(1).cpu() == y).sum().item()
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def imagefolder_task(
    root: str, *, image_size: int = 28, test_fraction: float = 0.25, seed: int = 0, max_images: int = 50_000
) -> Task:
    """A torchvision ``ImageFolder`` (``root/<class>/<image>``) loaded into memory: resized to
    ``image_size`` squared, RGB, normalised with the training split's statistics, the same seeded
    stratified split as :func:`digits_task`. For small folders (at most ``max_images``)."""
    from pathlib import Path

    try:
        from torchvision import datasets, transforms
    except ImportError as err:
        raise ValueError(
            "data: reading an image folder needs torchvision (pip install slimtorch-compress[vision])"
        ) from err
    if not Path(root).is_dir():
        raise ValueError(f"data: expected 'digits' or an ImageFolder directory, got {root!r} (not a directory)")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size: expected an int >= 8, got {image_size!r}")
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])
    try:
        folder = datasets.ImageFolder(root, transform=tf, loader=lambda p: datasets.folder.pil_loader(p))
    except (FileNotFoundError, RuntimeError) as err:
        raise ValueError(f"data: {root!r} is not an ImageFolder (root/<class>/<image>): {err}") from err
    if len(folder) > max_images:
        raise ValueError(f"data: {len(folder)} images, more than max_images={max_images} held in memory")
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    labels = torch.tensor(folder.targets, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    for c in range(len(folder.classes)):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = max(1, round(len(members) * test_fraction)) if len(members) > 1 else 0
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    train_idx, test_idx = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    mean = images[train_idx].mean(dim=(0, 2, 3), keepdim=True)
    std = images[train_idx].std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    images = (images - mean) / std
    return Task(
        name=f"imagefolder:{Path(root).name}",
        x_train=images[train_idx].contiguous(),
        y_train=labels[train_idx].contiguous(),
        x_test=images[test_idx].contiguous(),
        y_test=labels[test_idx].contiguous(),
        num_classes=len(folder.classes),
    )


def load_task(data: str = "digits", *, image_size: int = 28, seed: int = 0) -> Task:
    """``"digits"`` (the embedded task) or an ImageFolder path."""
    if data == "digits":
        return digits_task(image_size=image_size, seed=seed)
    return imagefolder_task(data, image_size=image_size, seed=seed)
