"""The one top-k rule: best first, ties in index order, whatever the partial sort picks."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_retrieval.ranking import top_k_indices


@pytest.mark.parametrize("k", [1, 3, 5, 9, 20])
def test_ties_keep_index_order_and_match_a_full_stable_sort(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=200).astype(np.float32)  # many ties
    want = np.argsort(-scores, kind="stable")[:k]
    np.testing.assert_array_equal(top_k_indices(scores, k), want)
    matrix = rng.integers(0, 3, size=(4, 50)).astype(np.float32)
    np.testing.assert_array_equal(top_k_indices(matrix, k), np.argsort(-matrix, axis=1, kind="stable")[:, :k])


def test_edge_cases():
    assert top_k_indices(np.array([0.1, 0.9]), 0).tolist() == []
    assert top_k_indices(np.array([0.1, 0.9]), 5).tolist() == [1, 0]
    assert top_k_indices(np.array([-np.inf, 0.5, -np.inf]), 2).tolist() == [1, 0]
