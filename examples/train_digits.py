"""Train a small CNN on handwritten digits in graph mode.

The data are scikit-learn's bundled digits (1,797 real 8x8 grey images shipped inside the package:
no download). A quarter is held out. Each training step (forward, backward and the SGD update of
every Parameter and momentum buffer) is one compiled executable: `nn.TrainOneStepCell` compiles
its step with gd.jit, and the Parameter updates are outputs of that executable that the runtime
swaps into the Parameters after each call (docs/training.md).

    python examples/train_digits.py [--epochs N] [--quiet]

prints the loss per epoch, the time per step and the held-out accuracy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphad as gd
from graphad import nn, ops


def load_digits(seed: int = 0):
    """(x_train, y_train, x_test, y_test): images scaled to [0, 1] as float32 (N, 1, 8, 8),
    int32 labels; a seeded shuffle, the last quarter held out."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_train = len(y) - len(y) // 4
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class DigitsCNN(nn.Cell):
    """conv(1->16, 3x3) -> relu -> maxpool 2 -> conv(16->32, 3x3) -> relu -> maxpool 2 -> dense 64 -> dense 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, pad_mode="same", has_bias=True)
        self.conv2 = nn.Conv2d(16, 32, 3, pad_mode="same", has_bias=True)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Dense(32 * 2 * 2, 64)
        self.fc2 = nn.Dense(64, 10)

    def construct(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def make_step(net: nn.Cell, lr: float = 0.05, momentum: float = 0.9, jit: bool = True) -> nn.TrainOneStepCell:
    """The compiled train step: SGD with momentum on softmax cross-entropy."""
    opt = nn.SGD(net.trainable_params(), lr, momentum=momentum)
    return nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt, jit=jit)


def accuracy(net: nn.Cell, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of `x` classified as `y` (one compiled forward pass over the whole set)."""
    logits = gd.jit(lambda t: net(t))(gd.Tensor(x))
    return float(np.mean(np.argmax(logits.asnumpy(), -1) == y))


def train(epochs: int = 30, batch: int = 64, seed: int = 0, quiet: bool = False):
    """Train from a seeded initialisation; returns (net, losses per epoch, test accuracy, ms per step)."""
    x_train, y_train, x_test, y_test = load_digits(seed)
    gd.set_seed(seed)
    net = DigitsCNN()
    step = make_step(net)
    rng = np.random.default_rng(seed + 1)
    losses, step_times = [], []
    for epoch in range(epochs):
        order = rng.permutation(len(y_train))
        total, n = 0.0, 0
        t0 = time.perf_counter()
        for i in range(0, len(order) - batch + 1, batch):  # full batches: one compiled signature
            idx = order[i:i + batch]
            loss = step(gd.Tensor(x_train[idx]), gd.Tensor(y_train[idx]))
            total += float(loss.asnumpy())
            n += 1
        elapsed = time.perf_counter() - t0
        if epoch > 0:  # the first epoch includes the compile
            step_times.append(elapsed / n)
        losses.append(total / n)
        if not quiet:
            print(f"epoch {epoch + 1:3d}  loss {losses[-1]:.4f}  {1e3 * elapsed / n:8.3f} ms/step")
    acc = accuracy(net, x_test, y_test)
    ms = 1e3 * float(np.median(step_times)) if step_times else float("nan")
    if not quiet:
        print(f"held-out accuracy {100 * acc:.2f}% on {len(y_test)} images; {ms:.3f} ms per step "
              f"(batch {batch}, median over epochs 2..{epochs})")
    return net, losses, acc, ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    train(args.epochs, quiet=args.quiet)


if __name__ == "__main__":
    main()
