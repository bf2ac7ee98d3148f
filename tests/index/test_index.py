import numpy as np
import pytest

from mnemoray.index.fusion import reciprocal_rank_fusion
from mnemoray.index.lexical import BM25Index
from mnemoray.index.vector import VectorIndex


def _unit(rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_vector_index_finds_nearest(kind):
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(500, 16)))
    index = VectorIndex(16, kind=kind, ivf_nlist=8)
    index.add(base[:300])
    index.add(base[300:])  # incremental additions are searchable
    scores, ids = index.search(base[[7, 450]], 3)
    assert ids[0][0] == 7 and ids[1][0] == 450
    assert scores[0][0] == pytest.approx(1.0, abs=1e-4)


def test_vector_index_empty_and_state_roundtrip():
    index = VectorIndex(4)
    scores, ids = index.search(_unit([[1, 0, 0, 0]]), 5)
    assert ids.shape == (1, 0)
    index.add(_unit([[1, 0, 0, 0], [0, 1, 0, 0]]))
    clone = VectorIndex(4)
    clone.load_state(index.state())
    assert clone.search(_unit([[0, 1, 0, 0]]), 1)[1][0][0] == 1


def test_bm25_ranks_lexical_match_first_and_ignores_non_matches():
    index = BM25Index()
    index.add(["the cat sat on the mat", "we planned a wine tasting course", "running shoes for marathons"])
    hits = index.search(["wine courses", "zzzz"], 3)
    assert hits[0][0][0] == 1  # stemming: courses -> cours
    assert hits[1] == []
    assert all(score > 0 for _, score in hits[0])


def test_rrf_hand_computed():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)
    scores = dict(fused)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert [i for i, _ in fused][:2] == [1, 3]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[1.0, 2.0])


def test_real_embedder_semantics(embedder):
    vecs = embedder.encode(["I adopted a puppy last week", "We got a new dog recently", "The stock market fell"])
    assert vecs.shape == (3, embedder.dim) and embedder.dim == 384
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
