"""Composed search through the searcher, the engine, the CLI and the API: the same algebra everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashion_retrieval import Searcher, open_store
from fashion_retrieval.errors import QueryError
from fashion_retrieval.search.caption_edit import mentions, stem
from fashion_retrieval.search.compose.algebra import COMPOSED, MODIFIER, REFERENCE, compose_query, rocchio
from fashion_retrieval.search.compose.request import ComposeQuery
from fashion_retrieval.serve.app import create_app
from fashion_retrieval.serve.config import ServeConfig
from fashion_retrieval.serve.engine import EngineSettings, QueryEngine
from tests.store.conftest import embeddings_dir, store_catalog, store_encoder  # noqa: F401


@pytest.fixture(scope="module")
def searcher(embeddings_dir, store_encoder):  # noqa: F811
    return Searcher(open_store(embeddings=str(embeddings_dir)), store_encoder)


def _ids(response):
    return [h.id for h in response.results]


def test_item_reference_follows_the_algebra_and_is_left_out(searcher):
    store = searcher.store
    item = store.some_ids(5)[3]
    response = searcher.compose("in red", item=item, top_k=6)
    assert item not in _ids(response) and len(response.results) == 6
    caption = store.get([item])[0].caption
    assert response.extra["reference_caption"] == caption and response.extra["caption_estimated"] is False
    composed = response.extra["composed_caption"]
    vectors = dict(
        zip([MODIFIER, REFERENCE, COMPOSED], searcher.encode_texts(["in red", caption, composed]), strict=True)
    )
    query = compose_query(store.vectors([item], "image")[0], vectors, "delta")
    expected = [h.id for h in store.search(query, "image", 7)[0] if h.id != item][:6]
    assert _ids(response) == expected


def test_an_uploaded_reference_gets_an_estimated_caption(searcher):
    store = searcher.store
    item = store.some_ids(2)[1]
    path = store.get([item])[0].path
    response = searcher.compose("with stripes", image=path, top_k=4)
    assert response.extra["caption_estimated"] is True and response.extra["reference_caption"]
    assert response.query["image"] is True and len(response.results) == 4
    with pytest.raises(QueryError, match="not both"):
        searcher.compose("in red", item=item, image=path)


def test_negatives_sink_items_that_mention_them(searcher):
    plain = searcher.text("a dress", top_k=48)
    striped = [h.id for h in plain.results if mentions(h.caption, "stripes")]
    assert striped, "the test catalogue has striped items"
    without = searcher.text("a dress", top_k=48, minus=["stripes"])
    ranked = _ids(without)
    assert set(ranked) == set(_ids(plain))
    assert all(ranked.index(s) > ranked.index(o) for s in striped for o in ranked if o not in striped)
    # with the ITM rerank, and on captions, the exclusion holds too
    reranked = searcher.text("a dress", top_k=20, minus=["stripes"], rerank=20)
    order = [h.id for h in reranked.results]
    assert all(order.index(s) > order.index(o) for s in striped if s in order for o in order if o not in striped)
    captions = searcher.text("a dress", top_k=20, minus=["stripes"], against="text")
    assert not any(mentions(h.caption, "stripes") for h in captions.results[:5])


def test_feedback_moves_toward_liked_items_and_hides_them(searcher):
    store = searcher.store
    first = searcher.text("a red dress", top_k=10)
    liked = _ids(first)[5:7]
    refined = searcher.compose("a red dress", like=liked, top_k=10)
    assert not set(liked) & set(_ids(refined))
    text_vec = searcher.encode_texts(["a red dress"])[0]
    query = rocchio(text_vec, store.vectors(liked, "image"), None)
    expected = [h.id for h in store.search(query, "image", 12)[0] if h.id not in liked][:10]
    assert _ids(refined) == expected
    with pytest.raises(QueryError, match="none of the liked items"):
        searcher.compose(like=["no-such-item"])
    stale = searcher.compose("a red dress", like=[liked[0], "gone-item"], top_k=10)  # a stale id is ignored
    assert stale.extra["ignored_feedback"] == ["gone-item"] and liked[0] not in _ids(stale)
    with pytest.raises(QueryError, match="needs a reference"):
        ComposeQuery()


def test_stems_match_the_spellings_catalogues_use():
    assert stem("stripes") == stem("striped") == stem("stripe")
    assert stem("dots") == stem("dotted") and stem("colour") == stem("color")
    assert mentions("The lady wears a polka-dot dress.", "dots")
    assert mentions("A color-block top.", "colour block") and not mentions("A blue top.", "colour block")


def test_a_negative_matches_the_names_catalogues_give_a_pattern():
    # DeepFashion-MultiModal says "pure color" and "lattice" where a shopper says "plain" and "checked"
    assert mentions("The lady wears a dress in pure colour.", "plain")
    assert mentions("His shirt has lattice patterns.", "checked") and mentions("A plaid coat.", "no lattice")
    assert mentions("A solid color tee.", "without plain dresses") is False  # every other word still counts
    assert mentions("A solid color dress.", "plain dresses")
    assert mentions("The man wears a spotted tie.", "polka dots")
    # a synonym never stands in for another pattern, nor a colour word for "pure colour"
    assert not mentions("The lady wears a striped dress.", "plain")
    assert not mentions("A colour-block top.", "pure colour") and not mentions("A red top.", "plain")
    assert not mentions("The lady wears a lattice skirt.", "striped")


def test_engine_and_api_give_the_searchers_results(searcher, embeddings_dir):  # noqa: F811
    item = searcher.store.some_ids(4)[2]
    direct = searcher.compose("in blue", item=item, minus=["stripes"], top_k=5)
    engine = QueryEngine(searcher, EngineSettings()).start()
    try:
        batched = engine.run(ComposeQuery("in blue", item, None, ["stripes"], top_k=5))
    finally:
        engine.close()
    assert _ids(batched) == _ids(direct)
    app = create_app(ServeConfig(embeddings=str(embeddings_dir), device="cpu"), searcher=searcher)
    with TestClient(app) as client:
        answer = client.post(
            "/api/search/compose", data={"modifier": "in blue", "item": item, "minus": ["stripes"], "top_k": "5"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [r["id"] for r in body["results"]] == _ids(direct)
        assert body["composed_caption"] == direct.extra["composed_caption"]
        text = client.post("/api/search/text", json={"query": "a dress", "minus": ["stripes"], "top_k": 5})
        assert [r["id"] for r in text.json()["results"]] == _ids(searcher.text("a dress", top_k=5, minus=["stripes"]))
        assert client.post("/api/search/compose", data={"top_k": "5"}).status_code == 400  # nothing to refine
        assert client.post("/api/search/compose", data={"like": "no-such-item"}).status_code == 404
        assert client.post("/api/search/compose", data={"item": "no-such-item"}).status_code == 404


def test_cli_compose(searcher, embeddings_dir):  # noqa: F811
    from fashion_retrieval.cli import app

    item = searcher.store.some_ids(3)[0]
    args = ["search", "in red", "--item", item, "--embeddings", str(embeddings_dir), "--device", "cpu", "-k", "4"]
    result = CliRunner().invoke(app, [*args, "--minus", "stripes", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"]["type"] == "compose" and payload["query"]["minus"] == ["stripes"]
    assert [r["id"] for r in payload["results"]] == _ids(
        searcher.compose("in red", item=item, minus=["stripes"], top_k=4)
    )
    bad = CliRunner().invoke(
        app,
        ["search", "--image", "x.jpg", "--minus", "stripes", "--embeddings", str(embeddings_dir), "--device", "cpu"],
    )
    assert bad.exit_code == 2 and "--minus works on a text search or with --compose" in bad.output
    assert np.isfinite([r["score"] for r in payload["results"]]).all()
