import math

import pytest

from mnemoray.eval.metrics import mean_metrics, ndcg, query_metrics, recall_all, recall_any


def test_recall_any_and_all_by_hand():
    ranked = [["a"], ["x"], ["b"], ["y"]]
    gold = {"a", "b"}
    assert recall_any(ranked, gold, 1) == 1.0
    assert recall_all(ranked, gold, 2) == 0.0
    assert recall_all(ranked, gold, 3) == 1.0
    assert recall_any([["x"], ["y"]], gold, 2) == 0.0


def test_ndcg_hand_computed():
    # relevant at ranks 1 and 3, two gold ids: DCG = 1 + 1/log2(4); IDCG = 1 + 1/log2(3)
    ranked = [["a"], ["x"], ["b"]]
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg(ranked, {"a", "b"}, 3) == pytest.approx(expected)
    assert ndcg([["a"], ["b"]], {"a", "b"}, 10) == pytest.approx(1.0)
    assert ndcg([["x"]], {"a"}, 5) == 0.0


def test_duplicate_evidence_counts_once_in_ndcg():
    # the second item covers the same gold id again: not relevant a second time
    assert ndcg([["a"], ["a"], ["b"]], {"a", "b"}, 3) == pytest.approx(
        (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    )


def test_multi_id_items_and_cutoffs():
    ranked = [["t1", "t2", "t3"], ["t9"]]
    m = query_metrics(ranked, ["t2", "t3"], [1, 2])
    assert m["recall_all@1"] == 1.0 and m["recall_any@1"] == 1.0
    assert m["ndcg@1"] == pytest.approx(1.0)  # one item covering all gold at rank 1 is ideal with k=1


def test_mean_metrics():
    rows = [{"recall_any@5": 1.0}, {"recall_any@5": 0.0}, {"recall_any@5": 1.0}]
    assert mean_metrics(rows)["recall_any@5"] == pytest.approx(2 / 3)
    assert mean_metrics([]) == {}


def test_compare_shows_retrieval_and_qa_runs_side_by_side(tmp_path):
    import json

    from mnemoray.eval.compare import load_runs, markdown_table

    runs = {"r": {"dataset": "locomo", "memory": "rag-bm25", "n_queries": 3, "metrics": {"recall_any@10": 0.5}},
            "q": {"dataset": "locomo", "memory": "rag-bm25", "n_queries": 2,
                  "metrics": {"accuracy_lenient": 0.25, "f1": 0.1}}}
    for name, m in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    table = markdown_table(load_runs([tmp_path / "r", tmp_path / "q"]))
    header = table.splitlines()[0]
    assert "recall_any@10" in header and "accuracy_lenient" in header and "f1" in header
    assert "| 0.250 |" in table and "| 0.500 |" in table
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        load_runs([tmp_path])
