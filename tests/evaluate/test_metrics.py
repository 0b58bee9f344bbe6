"""Metrics against hand-computed answers: ties, several relevant items, no relevant item."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fashion_retrieval.evaluate.metrics import first_relevant_ranks, recall_report, relevance_matrix, summarize


def test_ranks_with_ties_and_several_relevant():
    scores = np.array(
        [
            [0.9, 0.5, 0.7, 0.1],  # relevant: 2 -> rank 2 (0.9 above it)
            [0.3, 0.3, 0.3, 0.3],  # relevant: 1 and 3, all tied -> first in gallery order is 1 -> rank 2
            [0.2, 0.8, 0.8, 0.1],  # relevant: 2, tied with 1 which comes first -> rank 2
            [0.1, 0.2, 0.3, 0.4],  # relevant: 0 and 3 -> best is 3 at rank 1
            [0.5, 0.4, 0.3, 0.2],  # none relevant -> inf
        ]
    )
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[0, 2] = relevant[1, 1] = relevant[1, 3] = relevant[2, 2] = relevant[3, 0] = relevant[3, 3] = True
    np.testing.assert_array_equal(first_relevant_ranks(scores, relevant), [2, 2, 2, 1, np.inf])


def test_summary_numbers():
    ranks = np.array([1, 2, 6, 11, np.inf])
    out = summarize(ranks, (1, 5, 10))
    assert out["recall@1"] == pytest.approx(1 / 5)
    assert out["recall@5"] == pytest.approx(2 / 5)
    assert out["recall@10"] == pytest.approx(3 / 5)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 11 + 0) / 5)
    assert out["median_rank"] == 4.0 and out["mean_rank"] == 5.0


def test_recall_report_pairs_and_attributes():
    # two clusters: items 0,1 are "red", 2,3 are "blue"; each text is nearest its own image except text 1
    image = np.eye(4, dtype=np.float32)
    text = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    pair = recall_report(image, text, ["a", "b", "c", "d"], ks=(1,))
    assert pair["text_to_image"]["recall@1"] == pytest.approx(3 / 4)  # text 1 ranks its image 2nd
    colour = recall_report(image, text, ["red", "red", "blue", "blue"], ks=(1,))
    assert colour["text_to_image"]["recall@1"] == 1.0  # any red image counts for a red caption
    assert relevance_matrix(["x"], ["y", "x"]).tolist() == [[False, True]]
    assert (
        math.isinf(
            recall_report(image, text, ["a", "b", "c", "d"], ks=(1,), query_rows=np.array([1]))["text_to_image"][
                "median_rank"
            ]
        )
        is False
    )
