"""The query algebra of search/compose/algebra.py and the caption editor: properties that must hold for any vectors."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_retrieval.search.caption_edit import CaptionEditor, append_modifier
from fashion_retrieval.search.compose.algebra import (
    COMPOSED,
    DEFAULT_WEIGHTS,
    MODIFIER,
    REFERENCE,
    ComposeWeights,
    compose_query,
    compose_texts,
    negative_vectors,
    normalize,
    penalize_negatives,
    rocchio,
)

CAPTIONS = [
    f"The {who} wears a {color} {garment} with {pattern} patterns."
    for who in ("lady", "man")
    for color in ("red", "blue", "green", "black")
    for garment in ("dress", "shirt", "skirt", "jacket")
    for pattern in ("striped", "dotted", "plaid")
]


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return normalize(rng.normal(size=(*shape, 32)))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(normalize(a) @ normalize(b))


def test_normalize_unit_rows_and_zero_stays_zero():
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_compose_texts_roles():
    texts = compose_texts("in red", "The lady wears a blue dress.", ["stripes", " ", "dots"])
    assert texts == {
        MODIFIER: "in red",
        REFERENCE: "The lady wears a blue dress.",
        COMPOSED: "The lady wears a blue dress. in red",  # no editor: appended
        "negative:0": "stripes",
        "negative:1": "dots",
    }
    assert COMPOSED not in compose_texts("in red")  # an upload without an estimated caption
    editor = CaptionEditor.from_captions(CAPTIONS)
    assert compose_texts("in red", "The lady wears a blue dress.", editor=editor)[COMPOSED] == (
        "The lady wears a red dress."
    )


def test_every_method_gives_unit_vectors_batched_or_not():
    rng = np.random.default_rng(0)
    image = unit(rng, 5)
    vecs = {MODIFIER: unit(rng, 5), REFERENCE: unit(rng, 5), COMPOSED: unit(rng, 5), "negative:0": unit(rng)}
    for method in ("image", "text", "sum", "delta", "caption"):
        batched = compose_query(image, vecs, method, DEFAULT_WEIGHTS.with_(negative_subtract=0.5))
        assert batched.shape == (5, 32)
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
        single = compose_query(image[2], {k: (v[2] if v.ndim == 2 else v) for k, v in vecs.items()}, method)
        assert single.shape == (32,) and np.linalg.norm(single) == pytest.approx(1.0, rel=1e-5)


def test_sum_and_delta_limits():
    rng = np.random.default_rng(1)
    image, modifier, reference, composed = unit(rng, 4)
    vecs = {MODIFIER: modifier, REFERENCE: reference, COMPOSED: composed}
    np.testing.assert_allclose(compose_query(image, vecs, "sum", ComposeWeights(alpha=0.0)), image, atol=1e-6)
    np.testing.assert_allclose(compose_query(image, vecs, "sum", ComposeWeights(alpha=1.0)), modifier, atol=1e-6)
    np.testing.assert_allclose(compose_query(image, vecs, "delta", ComposeWeights(delta=0.0)), image, atol=1e-6)
    # the delta moves the image toward the composed caption and away from the reference caption
    moved = compose_query(image, vecs, "delta")
    assert cos(moved, composed) > cos(image, composed)
    assert cos(moved, reference) < cos(image, reference)
    np.testing.assert_allclose(compose_query(image, vecs, "caption"), composed, atol=1e-6)


def test_fallbacks_without_caption_or_image():
    rng = np.random.default_rng(2)
    image, modifier = unit(rng, 2)
    only_modifier = {MODIFIER: modifier}
    expected = compose_query(image, only_modifier, "sum")
    np.testing.assert_allclose(compose_query(image, only_modifier, "delta"), expected)
    np.testing.assert_allclose(compose_query(image, only_modifier, "caption"), expected)
    np.testing.assert_allclose(compose_query(None, only_modifier, "delta"), modifier, atol=1e-6)
    with pytest.raises(ValueError, match="needs a reference image"):
        compose_query(None, {}, "image")
    with pytest.raises(ValueError, match="needs a modifier"):
        compose_query(image, {}, "sum")
    with pytest.raises(ValueError, match="method"):
        compose_query(image, only_modifier, "magic")  # type: ignore[arg-type]


def test_weights_are_validated_and_frozen():
    with pytest.raises(ValueError, match="alpha"):
        ComposeWeights(alpha=1.5)
    with pytest.raises(ValueError, match="method"):
        ComposeWeights(method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool"):
        DEFAULT_WEIGHTS.with_(pool=0)
    with pytest.raises(AttributeError):
        DEFAULT_WEIGHTS.alpha = 0.3  # type: ignore[misc]
    assert DEFAULT_WEIGHTS.with_(delta=2.0).delta == 2.0 and DEFAULT_WEIGHTS.delta != 2.0


def test_subtracting_a_negative_lowers_items_close_to_it():
    rng = np.random.default_rng(3)
    query, negative = unit(rng, 2)
    near_negative = normalize(query + 2 * negative)
    far = normalize(query - 2 * negative)
    vecs = {MODIFIER: query, "negative:0": negative}
    plain = compose_query(None, vecs, "text", DEFAULT_WEIGHTS.with_(negative_subtract=0.0))
    minus = compose_query(None, vecs, "text", DEFAULT_WEIGHTS.with_(negative_subtract=0.5))
    assert minus @ near_negative < plain @ near_negative
    assert minus @ far > plain @ far
    np.testing.assert_array_equal(negative_vectors(vecs), negative[None])
    assert negative_vectors({MODIFIER: query}).shape == (0, 32)


def test_penalty_sinks_items_like_the_negative_and_spares_the_rest():
    rng = np.random.default_rng(4)
    negative = unit(rng)
    pool = unit(rng, 30)
    pool[0] = normalize(pool[0] + 3 * negative)  # looks like what is excluded
    scores = np.linspace(1.0, 0.5, 30).astype(np.float32)  # item 0 ranked first before re-scoring
    new = penalize_negatives(pool, scores, negative[None], ComposeWeights(negative_penalty=2.0))
    assert int(np.argmax(new)) != 0 and new[0] < scores[0] - 0.5
    below = pool @ negative <= (pool @ negative).mean()
    np.testing.assert_array_equal(new[below], scores[below])  # at or below the pool's mean: untouched
    assert np.all(new <= scores)
    np.testing.assert_array_equal(penalize_negatives(pool[:1], scores[:1], negative[None]), scores[:1])
    off = penalize_negatives(pool, scores, negative[None], ComposeWeights(negative_penalty=0.0))
    np.testing.assert_array_equal(off, scores)


def test_rocchio_moves_toward_liked_and_away_from_unliked():
    rng = np.random.default_rng(5)
    query = unit(rng)
    liked, unliked = unit(rng, 2), unit(rng, 2)
    moved = rocchio(query, liked, unliked)
    assert np.linalg.norm(moved) == pytest.approx(1.0, rel=1e-5)
    assert cos(moved, liked.mean(0)) > cos(query, liked.mean(0))
    assert cos(moved, unliked.mean(0)) < cos(query, unliked.mean(0))
    np.testing.assert_allclose(rocchio(query, None, np.zeros((0, 32))), query, atol=1e-6)
    stronger = rocchio(query, liked, None, DEFAULT_WEIGHTS.with_(rocchio_liked=3.0))
    assert cos(stronger, liked.mean(0)) > cos(rocchio(query, liked, None), liked.mean(0))


def test_caption_editor_fills_the_slot_the_modifier_names():
    editor = CaptionEditor.from_captions(CAPTIONS)
    assert editor.similarity("red", "blue") > editor.similarity("red", "dress")
    assert editor.similarity("lady", "man") > editor.similarity("lady", "striped")
    edit = editor.edit("The lady wears a blue dress with dotted patterns.", "in red")
    assert edit.text == "The lady wears a red dress with dotted patterns."
    assert edit.replaced == (("blue", "red"),) and not edit.appended
    assert editor.edit("The lady wears a blue dress.", "for a man").text == "The man wears a blue dress."
    assert editor.edit("The lady wears a blue dress.", "as a jacket").text == "The lady wears a blue jacket."
    assert editor.edit("Blue dress.", "in red").text == "Red dress."  # capitalised like the word it replaced
    unknown = editor.edit("The lady wears a blue dress.", "in crimson")  # a word the captions never use
    assert unknown.text == append_modifier("The lady wears a blue dress.", "in crimson") and unknown.appended
    same = editor.edit("The lady wears a red dress.", "in red")
    assert same.text == "The lady wears a red dress." and same.replaced == () and not same.appended
