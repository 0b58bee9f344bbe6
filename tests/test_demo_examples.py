"""The demo's printed examples are what a newcomer reads first: their results must be what the query asks for
(garment and colour, and the wearer's gender where the query names one), on the demo's own trained model."""

from __future__ import annotations

import pytest

from fashion_retrieval.demo import EXAMPLES, example_searches

# The demo's model is trained from a fixed seed, but not to the same bits on every machine: thread count and the
# CPU's instruction set change the rounding. The recipe (demo.py) was chosen with a margin for that: the last right
# result outscores the first wrong one by at least 0.10 in cosine with one or two threads or AVX2 kernels (0.05 and
# 0.07 on two other catalogue seeds).


@pytest.mark.slow
@pytest.mark.xdist_group("trained_demo")
def test_every_printed_example_finds_what_it_asks_for(trained_demo):
    examples = example_searches(str(trained_demo))
    assert [e["query"] for e in examples[: len(EXAMPLES)]] == [e.query for e in EXAMPLES]
    assert len(examples) == len(EXAMPLES) + 1  # and one composed search: "like this, but in red"
    composed = examples[-1]["expected"]
    assert composed["color"] == "red" and composed["gender"] in ("MEN", "WOMEN") and composed["garment"]
    report = {
        e["query"]: [(h["matches"], h["gender"], h["garment"], h["color"]) for h in e["results"]] for e in examples
    }
    assert all(len(e["results"]) == 3 for e in examples), report
    assert all(h["matches"] for e in examples for h in e["results"]), report
