"""Test helpers written independently of the package: the original toolkit's LoRA wrap, PEFT checkpoints,
reference embeddings computed straight from the model's submodules, and image files of every kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

TARGETS = ("query", "value", "vision_proj", "text_proj")


class OriginalLoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(in_features, rank) * 0.1)
        self.lora_B = nn.Parameter(torch.randn(rank, out_features) * 0.1)  # non-zero: a trained adapter


class OriginalLoRALinear(nn.Module):
    """As in the original toolkit: output = linear(x) + (x @ A @ B) * alpha / r."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.lora = OriginalLoRA(linear.in_features, linear.out_features, rank)
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (x @ self.lora.lora_A @ self.lora.lora_B) * self.scaling


def wrap_original(model: nn.Module, rank: int = 16, alpha: float = 32, targets=TARGETS) -> nn.Module:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(t in n for t in targets)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, OriginalLoRALinear(getattr(parent, child), rank, alpha))
    return model


def perturb_base(model: nn.Module, seed: int = 1) -> None:
    """Change a few base weights too, as full fine-tuning alongside LoRA would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name.lower() or name.endswith("embeddings.word_embeddings.weight"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)


@torch.no_grad()
def reference_image_embedding(model, pixel_values: torch.Tensor) -> np.ndarray:
    cls = model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 0, :]
    return F.normalize(model.vision_proj(cls), dim=-1).numpy()


@torch.no_grad()
def reference_text_embedding(model, input_ids, attention_mask) -> np.ndarray:
    cls = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0, :]
    return F.normalize(model.text_proj(cls), dim=-1).numpy()


def write_image(path: Path, color=(200, 30, 30), size=(60, 80), mode="RGB", fmt="JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    # a diagonal stripe so that images differ in structure as well as colour
    pixels = image.load()
    for i in range(min(size)):
        pixels[i, i] = (255 - color[0], 255 - color[1], 255 - color[2])
    image.convert(mode).save(path, fmt)
    return path


def jpeg_bytes(color=(10, 120, 200), size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def free_port() -> int:
    """A free loopback port above Ray's worker ports (10002-19999) and below the kernel's usual ephemeral range
    (32768-60999), where bind(0) would look and where every outgoing connection takes its local port: a port found
    there may be another connection's by the time the server binds it."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-31999")


class ServedIndex:
    """`fashion-retrieval serve ARGS` in a real subprocess on a free loopback port, until closed. Its output goes
    to a temporary file (no pipe to fill, no reader thread in the test process): ``output`` is what it has
    printed so far, so a server shared by several tests can be checked for its log lines."""

    def __init__(self, *args: str, env: dict | None = None, startup: float = 60, headers: dict | None = None) -> None:
        self.headers = headers or {}  # sent with the health checks (a server with --api-key needs its key)
        for _attempt in range(3):  # a port taken between the check and the server's bind: another port
            if self._start(args, env, startup):
                return
            self.close()
            if "address already in use" not in self.output:
                break
        raise RuntimeError(f"server did not start: {self.output}")

    def _start(self, args: tuple[str, ...], env: dict | None, startup: float) -> bool:
        import subprocess
        import sys
        import tempfile
        import time

        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fashion_retrieval", "serve", *args, "--port", str(self.port), "--device", "cpu"],
            stdout=(log := tempfile.TemporaryFile()),
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._log = log
        deadline = time.time() + startup
        while time.time() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/api/health", headers=self.headers, timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.2)
        return False

    @property
    def output(self) -> str:
        """What the server has printed so far (everything, once closed)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def output_after(self, seconds: float = 0.3) -> str:
        """The output, once a line the server logs about the request it last answered has surely been written."""
        import time

        time.sleep(seconds)
        return self.output

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=20)


def metric_value(metrics: str, series: str) -> float:
    """The value of one Prometheus series (name and labels, as /metrics writes them) in a /metrics text; 0 if absent."""
    line = next((line for line in metrics.splitlines() if line.startswith(series + " ")), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def embed_config(catalog, base, out, **kw):
    """An in-process, CPU ``EmbedConfig`` for a tiny model, small batches and shards unless ``kw`` says otherwise."""
    from fashion_retrieval.config import EmbedConfig, ModelConfig

    return EmbedConfig(
        catalog=str(catalog),
        model=ModelConfig(str(base), device="cpu"),
        out=str(out),
        batch_size=kw.pop("batch_size", 4),
        workers=kw.pop("workers", 0),
        shard_size=kw.pop("shard_size", 8),
        **kw,
    )


# torch fastest on images, OpenVINO on captions (as measured on an AMX CPU), and the two towers run apart
# ("torch/openvino") fastest per item: ``--backend auto`` then splits them
SPLIT_SPEEDS = {"torch": (1e2, 1e1), "openvino": (1e1, 1e2), "onnxruntime": (1.0, 1.0), "torch/openvino": (9e1, 9e1)}


def force_backend_speeds(monkeypatch, speeds: dict[str, tuple[float, float]] = SPLIT_SPEEDS) -> None:
    """``--backend auto`` sees these (images/s, captions/s) per backend instead of timing its candidates."""
    from fashion_retrieval.model.backends import choice

    def figures(encoder) -> dict:
        images_per_second, captions_per_second = speeds[encoder.backend]
        return {
            "precision": encoder.precision.name,
            "images_per_second": images_per_second,
            "captions_per_second": captions_per_second,
            "seconds_per_item": 1 / images_per_second + 1 / captions_per_second,
        }

    monkeypatch.setattr(choice, "_seconds_per_item", figures)
