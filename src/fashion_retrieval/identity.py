"""The identity of a model: recorded with every embeddings folder and store, checked on every query.

A plain record (no torch): the model layer builds it, the embeddings folder and the stores keep it as a
dict, and anyone may compare two of them with ``ensure_same_model``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from fashion_retrieval.errors import ModelMismatchError

# Fields that change the vectors; paths are recorded but do not count (a moved file is the same model).
# The dtype a model runs in is a query-time detail, not part of the identity (see model/precision.py).
COMPARED = ("base_fingerprint", "checkpoint_sha256", "lora_alpha", "embed_dim", "preprocessing")


DEFAULT_FAMILY = "blip"


def identity_key(record: Mapping) -> str:
    """A short hash of what decides the vectors, from a recorded identity dict. The family counts too, except
    BLIP's, so that keys recorded before there were other families stay what they were."""
    fields = {k: record.get(k) for k in COMPARED}
    if (record.get("family") or DEFAULT_FAMILY) != DEFAULT_FAMILY:
        fields["family"] = record["family"]
    payload = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    family: str = DEFAULT_FAMILY

    @property
    def key(self) -> str:
        return identity_key(asdict(self))

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelIdentity:
        values = {k: data.get(k) for k in cls.__dataclass_fields__}
        values["family"] = values["family"] or DEFAULT_FAMILY  # recorded before there were families
        return cls(**values)

    def describe(self) -> str:
        return describe_identity(self.to_dict())


def describe_identity(record: Mapping) -> str:
    checkpoint = record.get("checkpoint")
    ckpt = f"{checkpoint} (sha256 {str(record.get('checkpoint_sha256'))[:12]})" if checkpoint else "none"
    alpha = record.get("lora_alpha")
    family = record.get("family") or DEFAULT_FAMILY
    return (
        f"{family} base {record.get('base')}, checkpoint {ckpt}, lora_alpha {alpha}, "
        f"{record.get('embed_dim')}-d, key {identity_key(record)}"
    )


def reference_or_verified(precision: Mapping) -> bool:
    """Whether a precision record (the model layer's ``Precision.to_dict``) is torch fp32, the reference, or passed
    a parity probe against it: vectors of two such records may be queried together."""
    reference = precision.get("dtype") == "float32" and precision.get("backend", "torch") == "torch"
    return reference or bool((precision.get("parity") or {}).get("passed"))


def ensure_same_model(expected: ModelIdentity | Mapping, actual: ModelIdentity | Mapping, what: str) -> None:
    """Refuse to mix vectors of two models; both identities go into the message."""
    exp = expected.to_dict() if isinstance(expected, ModelIdentity) else dict(expected)
    act = actual.to_dict() if isinstance(actual, ModelIdentity) else dict(actual)
    if identity_key(exp) != identity_key(act):
        raise ModelMismatchError(
            f"{what} was made by another model.\n  recorded: {describe_identity(exp)}\n"
            f"  given:    {describe_identity(act)}\n"
            "Use the recorded base and checkpoint, or re-embed and re-index with the new model."
        )


__all__ = [
    "COMPARED",
    "DEFAULT_FAMILY",
    "ModelIdentity",
    "describe_identity",
    "ensure_same_model",
    "identity_key",
    "reference_or_verified",
]
