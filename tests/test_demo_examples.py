"""The demo's printed examples are what a newcomer reads first: every result must be what its query asks for
(garment and colour, and the wearer's gender where the query names one), on the demo's own trained model."""

from __future__ import annotations

import pytest

from fashion_retrieval.demo import EXAMPLES, example_searches


@pytest.mark.slow
@pytest.mark.xdist_group("trained_demo")
def test_every_printed_example_is_what_it_asks_for(trained_demo):
    examples = example_searches(str(trained_demo))
    assert [e["query"] for e in examples[: len(EXAMPLES)]] == [e.query for e in EXAMPLES]
    assert len(examples) == len(EXAMPLES) + 1  # and one composed search: "like this, but in red"
    for example in examples:
        results = example["results"]
        wrong = [(h["caption"], h["gender"], h["garment"], h["color"]) for h in results if not h["matches"]]
        assert len(results) == 3 and not wrong, (example["query"], example["expected"], wrong)
    composed = examples[-1]["expected"]
    assert composed["color"] == "red" and composed["gender"] in ("MEN", "WOMEN") and composed["garment"]
