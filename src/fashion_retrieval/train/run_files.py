"""What a training run writes to its OUT folder: the state to resume from (``state/last.pt``), the best weights
in the original toolkit's format (``model_weights/best_model.pth``, with ``adapter/`` or ``model/``), the run's
config and failures, and its summary (``metrics.json``, ``curves.png``).

``RunFiles`` is a part of ``train.loop.Trainer``: its methods read the trainer's model, optimizer and history.
"""

from __future__ import annotations

import json

import torch

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.files import atomic_save, atomic_write_bytes
from fashion_retrieval.train import checkpoints


class RunFiles:
    """The run's files on disk, as a part of ``Trainer`` (which sets every attribute used here)."""

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in names}

    def _config_key(self) -> str:
        keep = {k: v for k, v in self.config.to_dict().items() if k not in ("epochs", "max_seconds", "workers")}
        return json.dumps(keep, sort_keys=True, default=str)

    def save_state(self, epoch: int) -> None:
        (self.out / "state").mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "best": self.best,
            "history": json.dumps(self.history),
            "config": self._config_key(),
            "trainable": self._trainable_state(),
            "logit_scale": self.logit_scale.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
        }
        atomic_save(self.out / "state" / "last.pt", lambda handle: torch.save(state, handle))

    def try_resume(self) -> bool:
        path = self.out / "state" / "last.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != self._config_key():
            raise FashionRetrievalError(f"{self.out} holds a training run with other settings: use another --out")
        self.model.load_state_dict(state["trainable"], strict=False)
        with torch.no_grad():
            self.logit_scale.copy_(state["logit_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch, self.step, self.elapsed = state["epoch"] + 1, state["step"], state["elapsed"]
        self.best, self.history = state["best"], json.loads(state["history"])
        return True

    def save_best(self) -> None:
        weights = self.out / "model_weights"
        weights.mkdir(parents=True, exist_ok=True)
        if self.config.full:
            state = checkpoints.original_format_from_plain(self.network, self.targets, self.config.lora_r)
            self.family.save_pretrained(self.network, self.processors, self.out / "model")
        else:
            state = checkpoints.original_format_from_peft(self.network)
            self.model.save_pretrained(self.out / "adapter")
        atomic_save(weights / "best_model.pth", lambda handle: torch.save(state, handle))

    def _write_run_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.out / "train_config.json", json.dumps(self.config.to_dict(), indent=2).encode())
        atomic_write_bytes(self.out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in self.failures).encode())

    def _finish(self, resumed: bool) -> dict:
        """The run's summary, written to OUT/metrics.json, with the curves plotted beside it."""
        best = max(self.history, key=lambda m: m["selection_score"]) if self.history else {}
        summary = {
            "out": str(self.out),
            "resumed": resumed,
            "epochs_run": len(self.history),
            "best_epoch": best.get("epoch"),
            "best": best,
            "history": self.history,
            "train_items": len(self.train_set),
            "val_items": len(self.val_set) if self.val_set else 0,
            "failed_images": len(self.failures),
            "seconds": round(self.elapsed, 2),
            "checkpoint": str(self.out / "model_weights" / "best_model.pth"),
        }
        atomic_write_bytes(self.out / "metrics.json", json.dumps(summary, indent=2).encode())
        from fashion_retrieval.train.curves import plot_curves

        plot_curves(self.history, self.out / "curves.png")
        return summary


__all__ = ["RunFiles"]
