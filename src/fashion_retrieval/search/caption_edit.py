"""Rewrite a reference caption by a modifier ("in red"), without a language model.

Training-free composed image retrieval methods (CIReVL, LDRE) ask a language model to rewrite the
reference item's caption into the target's ("a blue dress" + "in red" -> "a red dress") and then search
with that caption. Without a language model, appending the modifier keeps the old value ("a blue dress
in red"), and the text encoder then matches both colours. This module does the rewrite by lexical
substitution instead: each content word of the modifier replaces the caption word that fills the *same
slot* in the catalogue's own captions.

Two words fill the same slot when they occur in the same contexts: "red" and "blue" both follow "wears a"
and precede "dress"; "lady" and "man" both follow "The" and precede "wears". That is paradigmatic
similarity (distributional semantics, e.g. Schütze 1992; Turney and Pantel 2010): each word is a vector of
its left and right neighbours within ``window`` words, weighted by positive pointwise mutual information
(PPMI), and two words are similar when their vectors' cosine is high. It needs only the catalogue's
captions (no model, no vocabulary of colours or garments), works in any language the captions are in,
and is strongest on templated captions such as DeepFashion-MultiModal's. A modifier word the captions
never use, or one whose best slot is below ``threshold``, is not substituted: the modifier is then
appended, which is the plain method's behaviour.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")
# Function words never fill a slot and are never a modifier's content: they occur in every context.
STOPWORDS = frozenset(
    "a an the this that these those it its is are was be been being has have had with without in on at "
    "of for from to by as into onto and or but not no nor so than then too very also some any all same "
    "like instead just only more less one ones please make change rather".split()
)
DEFAULT_THRESHOLD = 0.3  # measured on the demo catalogue: lower lets unrelated words be replaced


def words(text: str) -> list[str]:
    """Lower-cased word tokens (hyphenated words such as ``t-shirt`` and ``polka-dot`` stay whole)."""
    return [w.lower() for w in WORD.findall(text)]


@dataclass(frozen=True)
class CaptionEdit:
    """The rewritten caption and what was done: (old, new) word substitutions, and whether the modifier
    was appended because some of its content found no slot."""

    text: str
    replaced: tuple[tuple[str, str], ...]
    appended: bool


class CaptionEditor:
    """Slot-filling substitution learned from a catalogue's captions; see the module docstring."""

    def __init__(self, vectors: dict[str, dict[int, float]], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.vectors = vectors  # word -> sparse unit-length PPMI context vector
        self.threshold = threshold

    @classmethod
    def from_captions(
        cls,
        captions: Iterable[str],
        *,
        window: int = 2,
        max_captions: int = 50_000,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> CaptionEditor:
        """Count each word's neighbours (position-tagged, up to ``window`` words each side) over at most
        ``max_captions`` captions (an even sample of longer lists: templated catalogues saturate fast, and
        counting is pure Python), then weight the counts by PPMI and normalise each word's vector."""
        texts = [c for c in captions if isinstance(c, str) and c.strip()]
        if len(texts) > max_captions:
            step = len(texts) / max_captions
            texts = [texts[int(i * step)] for i in range(max_captions)]
        contexts: dict[str, Counter] = defaultdict(Counter)
        for text in texts:
            tokens = ["<s>", *words(text), "</s>"]
            for i in range(1, len(tokens) - 1):
                counts = contexts[tokens[i]]
                for k in range(1, window + 1):
                    counts[("L", k, tokens[i - k] if i - k >= 0 else "<s>")] += 1
                    counts[("R", k, tokens[i + k] if i + k < len(tokens) else "</s>")] += 1
        feature_ids: dict[tuple, int] = {}
        feature_totals: Counter = Counter()
        word_totals = {w: sum(c.values()) for w, c in contexts.items()}
        for counts in contexts.values():
            for feature, n in counts.items():
                feature_totals[feature_ids.setdefault(feature, len(feature_ids))] += n
        total = sum(word_totals.values()) or 1
        vectors: dict[str, dict[int, float]] = {}
        for word, counts in contexts.items():
            vector = {}
            for feature, n in counts.items():
                fid = feature_ids[feature]
                pmi = math.log(n * total / (word_totals[word] * feature_totals[fid]))
                if pmi > 0:
                    vector[fid] = pmi
            norm = math.sqrt(sum(v * v for v in vector.values()))
            if norm:
                vectors[word] = {f: v / norm for f, v in vector.items()}
        log.info("caption editor: %d words from %d captions (window %d)", len(vectors), len(texts), window)
        return cls(vectors, threshold=threshold)

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, word: str) -> bool:
        return word.lower() in self.vectors

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the two words' context vectors (0 for a word the captions never use)."""
        va, vb = self.vectors.get(a.lower()), self.vectors.get(b.lower())
        if not va or not vb:
            return 0.0
        if len(va) > len(vb):
            va, vb = vb, va
        return float(sum(v * vb.get(f, 0.0) for f, v in va.items()))

    def edit(self, caption: str, modifier: str, *, threshold: float | None = None) -> CaptionEdit:
        """Rewrite ``caption`` by ``modifier``.

        For each content word m of the modifier (not a stop word, not already in the caption), the caption
        word w (not a stop word, not yet replaced) with the highest ``similarity(m, w)`` is the slot; if that
        is at least ``threshold``, every occurrence of w becomes m. If some content word found no slot, the
        modifier is appended after the (partly) rewritten caption, so nothing the user asked for is lost.
        """
        threshold = self.threshold if threshold is None else threshold
        spans = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(caption)]
        present = {w for *_, w in spans}
        content = [w for w in dict.fromkeys(words(modifier)) if w not in STOPWORDS and w not in present]
        slots: dict[str, str] = {}  # caption word -> modifier word
        missing = False
        for new in content:
            candidates = {w for *_, w in spans if w not in STOPWORDS and w not in slots}
            scored = sorted(((self.similarity(new, w), w) for w in candidates), key=lambda s: (-s[0], s[1]))
            if scored and scored[0][0] >= threshold:
                slots[scored[0][1]] = new
            else:
                missing = True
        text = caption
        for start, end, word in reversed(spans):
            if word in slots:
                text = text[:start] + _match_case(text[start:end], slots[word]) + text[end:]
        if missing:
            text = f"{text.rstrip()} {modifier.strip()}".strip()
        replaced = tuple((old, new) for old, new in slots.items())
        log.debug("edited %r by %r -> %r (replaced %s)", caption, modifier, text, replaced)
        return CaptionEdit(text, replaced, missing)


def stem(word: str) -> str:
    """A light English stem, enough to match a negative to a caption's spelling of it: plurals, "-ed"
    adjectives and a final "e" go ("stripes", "striped", "stripe" -> "strip"; "dots", "dotted" -> "dot")."""
    word = word.lower()
    for suffix in ("ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            word = word[: -len(suffix)] + ("i" if suffix == "ies" else "")
            break
    if len(word) > 3 and word.endswith("y"):
        word = word[:-1] + "i"  # hoody, hoodies -> hoodi
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # dotted -> dott -> dot
    if len(word) > 4 and word.endswith("our"):
        word = word[:-3] + "or"  # British and American spellings alike: colour -> color
    return word


# Names a shopper and a catalogue use for the same fabric pattern: DeepFashion-MultiModal's labels ("pure
# color", "lattice", "color block", "floral") and the words people type ("plain", "checked", "flowers"). The
# caption check of a negative ("no plain") matches any of them; stems cover plurals and "-ed" forms already.
PATTERN_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("plain", "solid", "solid colour", "pure colour", "single colour", "monochrome"),
    ("plaid", "lattice", "checked", "checkered", "check pattern", "tartan", "gingham"),
    ("dotted", "polka-dot", "polka dot", "spotted"),
    ("striped", "pinstriped", "pinstripe"),
    ("colour block", "colour-block", "colorblock", "block colour"),
    ("floral", "flower", "flowery"),
)


def _stems(phrase: str) -> frozenset[str]:
    return frozenset(stem(w) for w in words(phrase) if w not in STOPWORDS)


_SYNONYM_STEMS = tuple(tuple(_stems(name) for name in group) for group in PATTERN_SYNONYMS)


def spellings(phrase: str) -> list[frozenset[str]]:
    """The phrase's content stems, and the same with a pattern name in it swapped for each of its synonyms
    ("no plain dresses" -> {plain, dress}, {solid, color, dress}, {pur, color, dress}, ...)."""
    wanted = _stems(phrase)
    if not wanted:
        return []
    found = [wanted]
    for group in _SYNONYM_STEMS:
        for name in group:
            if name and name <= wanted:
                found += [(wanted - name) | other for other in group if other != name]
    return list(dict.fromkeys(found))


@lru_cache(maxsize=16384)  # a search's candidate pool is checked again for each negative, an evaluation's many times
def caption_stems(caption: str) -> frozenset[str]:
    """The stems of every word of ``caption``, hyphenated words also by their parts ("polka-dot" -> polka-dot,
    polka, dot), as ``mentions`` compares them."""
    present = set()
    for word in words(caption):
        present.add(stem(word))
        present.update(stem(part) for part in word.split("-") if part)
    return frozenset(present)


def mentions_any(caption: str, phrases: Iterable[str]) -> bool:
    """``mentions`` for several phrases at once: True when the caption mentions any of them."""
    alternatives = _all_spellings(tuple(phrases))  # cached: a pool of captions is checked for the same phrases
    if not alternatives:
        return False
    present = caption_stems(caption)
    return any(wanted <= present for wanted in alternatives)


def mentions(caption: str, phrase: str) -> bool:
    """True when every content word of ``phrase``, or of a spelling of it with a pattern synonym, occurs in
    ``caption`` (by stem; hyphenated words count by their parts too, so "polka-dot" mentions "dots")."""
    return mentions_any(caption, (phrase,))


@lru_cache(maxsize=1024)
def _all_spellings(phrases: tuple[str, ...]) -> tuple[frozenset[str], ...]:
    return tuple(wanted for phrase in phrases for wanted in spellings(phrase))


def _match_case(original: str, word: str) -> str:
    return word.capitalize() if original[:1].isupper() and original[1:2].islower() else word


def append_modifier(caption: str, modifier: str) -> str:
    """The no-editor composition: the reference caption with the modifier after it."""
    return f"{caption.rstrip()} {modifier.strip()}".strip()


__all__ = [
    "PATTERN_SYNONYMS",
    "STOPWORDS",
    "CaptionEdit",
    "CaptionEditor",
    "append_modifier",
    "caption_stems",
    "mentions",
    "mentions_any",
    "spellings",
    "stem",
    "words",
]
