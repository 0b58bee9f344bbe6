"""The composed-retrieval benchmark's tasks: how attribute values become words, and the triplets.

A catalogue with attribute columns (the synthetic one: garment, color, pattern, gender) plus a mapping
from each column's values to phrases is all the benchmark needs. ``ComposeMapping`` holds, per attribute,
the *modifier* that asks for a value ("in red", "with striped patterns", "for a man") and the *term* that
names it ("red", "striped") in a description ("The lady wears a red striped dress.") or a negative
("without red"). ``synthetic_mapping()`` is the default for ``fashion_retrieval.data.synthetic``; any other
catalogue passes its own as JSON (``ComposeMapping.from_json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.metrics import first_relevant_ranks


@dataclass(frozen=True)
class AttributePhrases:
    """One attribute's words: value -> modifier phrase, value -> term. A value without a modifier is never
    a change target; a value without a term is never named in a description or a negative."""

    modifiers: Mapping[str, str]
    terms: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComposeMapping:
    """Attribute columns -> phrases, the description template and the attributes negatives exclude.

    ``describe`` is a template over attribute names ("{gender} wears a {color} {pattern} {garment}."):
    ``description(values, omit=a)`` fills it with the values' terms, leaving attribute ``a`` out.
    """

    attributes: Mapping[str, AttributePhrases]
    describe: str
    negative_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [a for a in self.negative_attributes if a not in self.attributes]
        if unknown:
            raise FashionRetrievalError(f"compose mapping: negative attribute(s) {unknown} have no phrases")
        fields = set(re.findall(r"{(\w+)}", self.describe))
        if not fields <= set(self.attributes):
            raise FashionRetrievalError(
                f"compose mapping: describe uses unknown field(s) {fields - set(self.attributes)}"
            )

    def description(self, values: Mapping[str, str], omit: str | None = None) -> str:
        """The template filled with each attribute's term ('' for ``omit``), spaces tidied."""
        filled = self.describe.format(
            **{a: ("" if a == omit else self.attributes[a].terms.get(str(values[a]), "")) for a in self.attributes}
        )
        filled = re.sub(r"\s+", " ", filled).strip()
        return re.sub(r"\s+([.,;!?])", r"\1", filled)

    def to_dict(self) -> dict:
        return {
            "attributes": {
                a: {"modifiers": dict(p.modifiers), "terms": dict(p.terms)} for a, p in self.attributes.items()
            },
            "describe": self.describe,
            "negative_attributes": list(self.negative_attributes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ComposeMapping:
        try:
            attributes = {
                str(a): AttributePhrases(dict(p["modifiers"]), dict(p.get("terms", {})))
                for a, p in data["attributes"].items()
            }
            return cls(attributes, str(data["describe"]), tuple(data.get("negative_attributes", ())))
        except (KeyError, TypeError, AttributeError) as exc:
            raise FashionRetrievalError(
                "compose mapping: expected {attributes: {column: {modifiers: {value: phrase}, terms: {...}}}, "
                f"describe: '...', negative_attributes: [...]}} ({exc})"
            ) from None

    @classmethod
    def from_json(cls, path: str | Path) -> ComposeMapping:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise FashionRetrievalError(f"{path}: not JSON ({exc})") from None


def synthetic_mapping() -> ComposeMapping:
    """Phrases for the synthetic catalogue, in the words its captions use (so a tiny model's vocabulary,
    built from those captions, knows them)."""
    from fashion_retrieval.data.synthetic import COLORS, GARMENTS, GENDERS, PATTERNS

    pattern_terms = {p: ("plain" if p == "solid" else p) for p in PATTERNS}
    pattern_modifiers = {p: ("in plain colour" if p == "solid" else f"with {p} patterns") for p in PATTERNS}
    garment_terms = {g: ("T-shirt" if g == "t-shirt" else g) for g in GARMENTS}
    genders = {"MEN": ("for a man", "The man"), "WOMEN": ("for a woman", "The lady")}
    assert set(genders) == set(GENDERS)
    return ComposeMapping(
        attributes={
            "garment": AttributePhrases({g: f"as a {t}" for g, t in garment_terms.items()}, garment_terms),
            "color": AttributePhrases({c: f"in {c}" for c in COLORS}, {c: c for c in COLORS}),
            "pattern": AttributePhrases(pattern_modifiers, pattern_terms),
            "gender": AttributePhrases(
                {g: m for g, (m, _) in genders.items()}, {g: t for g, (_, t) in genders.items()}
            ),
        },
        describe="{gender} wears a {color} {pattern} {garment}.",
        negative_attributes=("color", "pattern"),
    )


@dataclass(frozen=True)
class Triplet:
    """A reference row, the attribute changed from ``old`` to ``new`` by ``modifier``, and the target rows:
    every item equal to the reference on every other mapped attribute, with ``new`` on the changed one."""

    reference: int
    attribute: str
    old: str
    new: str
    modifier: str
    targets: np.ndarray


def attribute_matrix(metadata: pd.DataFrame, mapping: ComposeMapping) -> np.ndarray:
    """The mapped attribute columns as a [N, A] array of strings (the order of ``mapping.attributes``)."""
    missing = [a for a in mapping.attributes if a not in metadata.columns]
    if missing:
        known = [c for c in metadata.columns if c not in ("id", "path", "caption", "placeholder")]
        raise FashionRetrievalError(
            f"the catalogue has no attribute(s) {', '.join(missing)} (it has {', '.join(known)}): "
            "pass a mapping for its columns (--mapping FILE)"
        )
    return metadata[list(mapping.attributes)].astype(str).to_numpy()


def build_triplets(metadata: pd.DataFrame, mapping: ComposeMapping, references: Sequence[int]) -> list[Triplet]:
    """For each reference row and each mapped attribute, one triplet per other value that has a modifier
    phrase and at least one target. Targets never include the reference itself."""
    values = attribute_matrix(metadata, mapping)
    names = list(mapping.attributes)
    triplets = []
    for r in references:
        for a, name in enumerate(names):
            others = np.delete(np.arange(len(names)), a)
            same_rest = (values[:, others] == values[r, others]).all(axis=1)
            for new, modifier in mapping.attributes[name].modifiers.items():
                if new == values[r, a]:
                    continue
                targets = np.flatnonzero(same_rest & (values[:, a] == new))
                if len(targets):
                    triplets.append(Triplet(int(r), name, str(values[r, a]), str(new), modifier, targets))
    return triplets


def first_target_ranks(scores: np.ndarray, triplets: Sequence[Triplet], exclude: Sequence[np.ndarray]) -> np.ndarray:
    """1-based rank of each query's best-ranked target (``inf`` if none), after removing the ``exclude``d
    rows of each query (its reference, items already shown); ties in gallery order, as the searcher."""
    scores = np.array(scores, dtype=np.float64)
    relevant = np.zeros(scores.shape, dtype=bool)
    for i, (triplet, gone) in enumerate(zip(triplets, exclude, strict=True)):
        relevant[i, triplet.targets] = True
        gone = np.asarray(gone, dtype=np.int64)
        relevant[i, gone] = False
        scores[i, gone] = -np.inf
    return first_relevant_ranks(scores, relevant)


__all__ = [
    "AttributePhrases",
    "ComposeMapping",
    "Triplet",
    "attribute_matrix",
    "build_triplets",
    "first_target_ranks",
    "synthetic_mapping",
]
