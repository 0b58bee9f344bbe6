"""The identity of a loaded model: recorded with every embeddings folder and store, checked on query."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from fashion_retrieval.errors import ModelMismatchError

# Fields that change the vectors; paths are recorded but do not count (a moved file is the same model).
_COMPARED = ("base_fingerprint", "checkpoint_sha256", "lora_alpha", "embed_dim", "preprocessing")


@dataclass(frozen=True)
class ModelIdentity:
    base: str
    base_fingerprint: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    checkpoint_format: str | None
    lora_alpha: float | None
    embed_dim: int
    preprocessing: dict

    @property
    def key(self) -> str:
        """A short hash of what decides the vectors."""
        payload = json.dumps({k: getattr(self, k) for k in _COMPARED}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        ckpt = f"{self.checkpoint} (sha256 {str(self.checkpoint_sha256)[:12]})" if self.checkpoint else "none"
        return f"base {self.base}, checkpoint {ckpt}, lora_alpha {self.lora_alpha}, key {self.key}"


def ensure_same_model(expected: ModelIdentity | dict, actual: ModelIdentity | dict, what: str) -> None:
    """Refuse to mix vectors of two models; both identities go into the message."""
    exp = expected if isinstance(expected, ModelIdentity) else ModelIdentity.from_dict(expected)
    act = actual if isinstance(actual, ModelIdentity) else ModelIdentity.from_dict(actual)
    if exp.key != act.key:
        raise ModelMismatchError(
            f"{what} was made by another model.\n  recorded: {exp.describe()}\n  given:    {act.describe()}\n"
            "Use the recorded base and checkpoint, or re-embed and re-index with the new model."
        )
