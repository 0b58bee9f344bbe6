"""``fashion-retrieval train``: LoRA (PEFT) or full fine-tuning of BLIP retrieval; the best epoch is kept.

Outputs mirror the original toolkit: OUT/model_weights/best_model.pth (original checkpoint format),
OUT/adapter/ (PEFT folder; OUT/model/ for --full), metrics.json, train_config.json, curves.png.
Interrupted runs resume from the last finished epoch (OUT/state/last.pt).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fashion_retrieval.data.records import Catalog, ColumnMap, read_catalog
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.metrics import recall_report
from fashion_retrieval.model.loading import load_model
from fashion_retrieval.progress import progress_bar
from fashion_retrieval.train.data import GroupedBatches, PairDataset
from fashion_retrieval.train.losses import contrastive_loss, itm_loss, soft_targets
from fashion_retrieval.train.run_files import RunFiles

log = logging.getLogger(__name__)
DEFAULT_TARGETS = ("query", "value", "vision_proj", "text_proj")  # BLIP's, as the original toolkit adapted


@dataclass(frozen=True)
class TrainConfig:
    catalog: str
    base: str
    out: str
    checkpoint: str | None = None
    images_dir: str | None = None
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.05
    lora_r: int = 16
    lora_alpha: float = 32.0
    targets: tuple[str, ...] | None = None  # None: the model family's (BLIP: DEFAULT_TARGETS; CLIP: q_proj, ...)
    val_fraction: float = 0.1
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 autocast on CUDA where supported, else fp32; or fp32 / bf16
    seed: int = 0
    grad_accum: int = 1
    full: bool = False
    itm: bool = False
    max_seconds: float | None = None
    match_attributes: tuple[str, ...] = ()
    partial_attributes: tuple[str, ...] = ()
    # batches drawn from a few values of one of these attributes at a time (train/data.py:GroupedBatches)
    group_batches_by: tuple[str, ...] = ()
    workers: int = 0
    limit: int | None = None
    on_error: str = "skip"  # unreadable images: skip (listed in OUT/failures.jsonl) or fail at the first
    ks: tuple[int, ...] = field(default=(1, 5, 10))

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "fail"):
            raise ValueError(f"--on-error {self.on_error!r} for training: use skip or fail")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("--val-fraction must be in [0, 1)")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--dtype {self.dtype!r} for training: use auto, fp32 or bf16")
        if self.epochs < 1 or self.batch_size < 2 or self.grad_accum < 1:
            raise ValueError("--epochs >= 1, --batch-size >= 2 (contrastive needs pairs), --grad-accum >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to zero, over training progress in [0, 1]."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    span = max(1e-8, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / span)))


class Trainer(RunFiles):
    """The training loop; what it writes to OUT (state to resume from, the best weights, the summary) is in
    ``train/run_files.py``."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        torch.manual_seed(config.seed)  # before the model is built: LoRA's initial weights are random
        catalog = _read_catalog(config)
        n_val = self._split(len(catalog))
        self._setup_model()
        self._setup_optimizer()
        self._setup_data(catalog, n_val)
        # Mixed precision on GPUs only (bf16 needs no loss scaling); weights and optimizer stay fp32.
        bf16_ok = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.amp = (config.dtype == "bf16" and self.device.type != "cpu") or (config.dtype == "auto" and bf16_ok)
        self.history: list[dict] = []
        self.best: float = -1.0
        self.start_epoch, self.step, self.elapsed = 0, 0, 0.0

    # -- setup ---------------------------------------------------------------------------------
    def _split(self, n_items: int) -> int:
        """Draw the validation rows (the rest train); returns how many validate."""
        config = self.config
        order = np.random.default_rng(config.seed).permutation(n_items)
        n_val = int(round(n_items * config.val_fraction))
        if n_items - n_val < config.batch_size:
            raise FashionRetrievalError(
                f"{n_items - n_val} training items is fewer than one batch of {config.batch_size}"
            )
        self.val_rows, self.train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        return n_val

    def _setup_model(self) -> None:
        """Load the model (any family) in fp32 and, unless ``full``, wrap it with LoRA adapters (``self.model`` is
        what trains; ``self.network`` the model itself, whose modules PEFT adapts in place)."""
        config = self.config
        loaded = load_model(
            config.base, config.checkpoint, lora_alpha=config.lora_alpha, device=config.device, dtype="fp32"
        )
        self.device, self.family, self.processors = loaded.device, loaded.family, loaded.processors
        if config.itm and not self.family.has_itm:
            raise FashionRetrievalError(
                f"--itm trains an image-text matching head, which this model ({self.family.label}) has not: "
                "leave --itm out"
            )
        self.targets = tuple(config.targets or self.family.lora_targets)
        self.network = loaded.model
        if config.full:
            self.model = self.network
        else:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                target_modules=list(self.targets),
                lora_dropout=0.0,
                bias="none",
            )
            self.model = get_peft_model(self.network, lora)
            log.info(
                "LoRA r=%d alpha=%g on %s's %s modules",
                config.lora_r,
                config.lora_alpha,
                self.family.label,
                self.targets,
            )
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=self.device))

    @property
    def blip(self) -> torch.nn.Module:
        """The model being trained (the name from when every model was a BLIP)."""
        return self.network

    def _setup_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad] + [self.logit_scale]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _setup_data(self, catalog: Catalog, n_val: int) -> None:
        """Build the training and validation sets, leaving unreadable images out (fatal if too few remain)."""
        config = self.config
        preprocess = self.processors.preprocess
        full_keys, partial_keys = list(config.match_attributes), list(config.partial_attributes)
        self.train_set = PairDataset(
            catalog, self.train_rows, preprocess, full_keys, partial_keys, config.on_error, config.group_batches_by
        )
        self.val_set = PairDataset(catalog, self.val_rows, preprocess, [], [], config.on_error) if n_val else None
        self.failures = self.train_set.failures + (self.val_set.failures if self.val_set is not None else [])
        if len(self.failures) == len(catalog):
            raise FashionRetrievalError(
                f"{config.catalog}: none of its {len(catalog)} images can be read "
                f"(first: {self.failures[0]['path']}: {self.failures[0]['reason']}); check --images-dir"
            )
        if len(self.train_set) < config.batch_size:
            raise FashionRetrievalError(
                f"{len(self.train_set)} readable training items is fewer than one batch of {config.batch_size}"
                + (f" ({len(self.failures)} unreadable images left out)" if self.failures else "")
            )
        if self.val_set is not None and len(self.val_set) == 0:
            self.val_set = None
        table = self.processors.tokenizer.table(self.train_set.captions)  # tokenised once, not every epoch
        self.train_tokens = {k: v.to(self.device) for k, v in table.items()} if table is not None else None

    # -- steps ---------------------------------------------------------------------------------
    def _tokens(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.processors.tokenizer(captions)
        return {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def _loss(self, batch: dict) -> torch.Tensor:
        if self.train_tokens is not None:
            tokens = self.processors.tokenizer.rows(self.train_tokens, batch["indices"])
        else:
            tokens = self._tokens(batch["captions"])
        pixels = batch["pixels"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.config.itm:  # BLIP: the ITM loss reuses the vision tower's hidden states
                image_hidden = self.network.vision_model(pixel_values=pixels).last_hidden_state
                image = F.normalize(self.network.vision_proj(image_hidden[:, 0, :]).float(), dim=-1)
            else:
                image = self.family.image_features(self.network, pixels)
            text = self.family.text_features(self.network, tokens["input_ids"], tokens["attention_mask"])
            targets = None
            if batch["full"] is not None:
                targets = soft_targets(batch["full"], batch["partial"])
            loss = contrastive_loss(image, text, self.logit_scale, targets)
            if self.config.itm:
                loss = loss + itm_loss(
                    self.network,
                    image_hidden,
                    tokens["input_ids"],
                    tokens["attention_mask"],
                    (image @ text.t()).detach(),
                )
        return loss

    @torch.no_grad()
    def validate(self) -> dict:
        if self.val_set is None:
            return {}
        self.model.eval()
        images, texts = [], []
        for start in range(0, len(self.val_set), 64):
            rows = list(range(start, min(start + 64, len(self.val_set))))
            batch = self.val_set.collate([self.val_set[i] for i in rows])
            pixels = batch["pixels"].to(self.device)
            images.append(self.family.image_features(self.network, pixels).cpu().numpy())
            tokens = self._tokens(batch["captions"])
            texts.append(self.family.text_features(self.network, **tokens).cpu().numpy())
        self.model.train()
        report = recall_report(np.concatenate(images), np.concatenate(texts), self.val_set.ids, self.config.ks)
        return {
            f"{d}_{m}": v
            for d in ("text_to_image", "image_to_text")
            for m, v in report[d].items()
            if m.startswith("recall@") or m == "mrr"
        }

    def run(self, progress: bool = True, *, epochs_this_run: int | None = None) -> dict:
        """Train to ``config.epochs`` (resuming if OUT holds a run); ``epochs_this_run`` stops early, as an
        interruption would, e.g. for jobs in time slices."""
        config = self.config
        self._write_run_files()
        resumed = self.try_resume()
        loader = self._loader()
        total_steps = max(1, len(loader) // config.grad_accum) * config.epochs
        self.model.train()
        epochs_before = len(self.history)
        # One bar for the run; with a time budget its length is the step count the budget allows at most.
        bar = progress_bar(total_steps, "training", "step", enabled=progress, initial=self.step)
        for epoch in range(self.start_epoch, config.epochs):
            losses, stop = self._train_epoch(loader, epoch, total_steps, bar)
            metrics = self._close_epoch(epoch, losses)
            self._show_epoch(bar, metrics, total_steps)
            if stop or (epochs_this_run and len(self.history) - epochs_before >= epochs_this_run):
                break
        bar.close()
        return self._finish(resumed)

    # -- run -----------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        config = self.config
        if config.group_batches_by:
            sampler = GroupedBatches(self.train_set.groups, config.batch_size, seed=config.seed)
            return DataLoader(
                self.train_set, batch_sampler=sampler, collate_fn=self.train_set.collate, num_workers=config.workers
            )
        return DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=self.train_set.collate,
            num_workers=config.workers,
            generator=torch.Generator().manual_seed(config.seed),
        )

    def _train_epoch(self, loader: DataLoader, epoch: int, total_steps: int, bar: Any) -> tuple[list[float], bool]:
        """One pass over the training set; returns its losses and whether the budget (steps or time) ran out."""
        config = self.config
        torch.manual_seed(config.seed + epoch)  # the same shuffles whether resumed or not
        if isinstance(loader.batch_sampler, GroupedBatches):
            loader.batch_sampler.set_epoch(epoch)
        else:
            loader.generator.manual_seed(config.seed + epoch)
        epoch_start, losses, stop = time.perf_counter(), [], False
        for index, batch in enumerate(loader):
            loss = self._loss(batch) / config.grad_accum
            loss.backward()
            losses.append(loss.item() * config.grad_accum)
            if (index + 1) % config.grad_accum:
                continue
            progress_now = self._optimizer_step(total_steps, epoch_start)
            bar.update(1)
            if progress_now >= 1.0:
                stop = True
                break
        self.elapsed += time.perf_counter() - epoch_start
        return losses, stop

    def _optimizer_step(self, total_steps: int, epoch_start: float) -> float:
        """Apply the accumulated gradients at the scheduled learning rate; returns training progress in [0, 1+]."""
        config = self.config
        progress_now = self.step / total_steps
        if config.max_seconds:
            spent = self.elapsed + time.perf_counter() - epoch_start
            progress_now = max(progress_now, spent / config.max_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(progress_now, config.warmup)
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 5.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return progress_now

    def _close_epoch(self, epoch: int, losses: list[float]) -> dict:
        """Validate, keep the weights if this epoch scores best so far, and save the state to resume from."""
        metrics = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": round(self.elapsed, 2),
            **self.validate(),
        }
        recalls = [v for k, v in metrics.items() if "recall@" in k]
        score = float(np.mean(recalls)) if recalls else -metrics["loss"]
        metrics["selection_score"] = score
        improved = score > self.best
        if improved:
            self.best = score
            self.save_best()
        metrics["best"] = improved
        self.history.append(metrics)
        self.save_state(epoch)
        return metrics

    def _show_epoch(self, bar: Any, metrics: dict, total_steps: int) -> None:
        config = self.config
        if config.max_seconds and self.elapsed > 0:  # with a time budget, the step count is what time allows
            bar.total = min(total_steps, max(self.step, int(self.step / self.elapsed * config.max_seconds)))
        top_k = max(config.ks)
        bar.set_postfix(
            epoch=metrics["epoch"],
            loss=f"{metrics['loss']:.3f}",
            lr=f"{self.optimizer.param_groups[0]['lr']:.1e}",
            **{f"val_R@{top_k}": f"{metrics.get(f'text_to_image_recall@{top_k}', float('nan')):.3f}"},
        )


def _read_catalog(config: TrainConfig) -> Catalog:
    catalog = read_catalog(config.catalog, images_dir=config.images_dir, columns=ColumnMap()).head(config.limit)
    wanted = (*config.match_attributes, *config.partial_attributes, *config.group_batches_by)
    missing = [a for a in wanted if a not in catalog.attributes]
    if missing:
        raise FashionRetrievalError(
            f"attribute(s) {', '.join(missing)} not in the catalogue; it has {', '.join(catalog.attributes)}"
        )
    return catalog


def train(config: TrainConfig, *, progress: bool = True) -> dict:
    """Fine-tune as ``config`` says; returns the summary also written to OUT/metrics.json."""
    return Trainer(config).run(progress=progress)
