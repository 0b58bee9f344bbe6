"""Training curves: loss and validation recall per epoch, as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [m["loss"] for m in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="loss")
    for key in sorted({k for m in history for k in m if "recall@" in k}):
        right.plot(epochs, [m.get(key) for m in history], marker=".", label=key.replace("_", " "))
    right.set(title="validation recall", xlabel="epoch", ylim=(0, 1.02))
    if right.lines:
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
