"""QA metric unit tests against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from mnemoray.eval.qa_metrics import bleu1, locomo_f1, normalize_answer, says_unanswerable, token_f1


def test_normalization_drops_commas_punctuation_articles_and_and():
    assert normalize_answer("The  cat, a DOG and an owl!") == "cat dog owl"
    assert normalize_answer("7 May, 2023.") == "7 may 2023"
    assert normalize_answer("Anderson's band") == "andersons band"  # 'an'/'and' only as whole words


def test_token_f1_hand_values():
    # pred {paris, france}, gold {paris}: P = 1/2, R = 1 -> F1 = 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    # pred {7, may, 2023}, gold {may, 2023}: P = 2/3, R = 1 -> 0.8
    assert token_f1("7 May 2023", "May 2023") == pytest.approx(0.8)
    assert token_f1("London", "Paris") == 0.0
    # multiset overlap: pred {go, go, home}, gold {go, home}: common 2, P = 2/3, R = 1 -> 0.8
    assert token_f1("go go home", "go home") == pytest.approx(0.8)


def test_empty_answers():
    assert token_f1("", "") == 1.0
    assert token_f1("the", "Paris") == 0.0  # nothing left after normalization
    assert bleu1("", "Paris") == 0.0


def test_bleu1_clipping_and_brevity_penalty():
    # pred "paris paris" vs gold "paris": clipped 1 of 2 -> 0.5, no penalty (c >= r)
    assert bleu1("Paris Paris", "Paris") == pytest.approx(0.5)
    # pred "may" (c=1) vs gold "7 may 2023" (r=3): precision 1, BP = exp(1 - 3) -> e^-2
    assert bleu1("May", "7 May 2023") == pytest.approx(math.exp(-2))
    assert bleu1("the 7 May 2023", "7 May 2023") == pytest.approx(1.0)


def test_locomo_category_rules():
    # multi-hop: gold parts {hiking}, {painting}; pred parts "hiking", "swimming" -> (1 + 0) / 2
    assert locomo_f1("hiking, swimming", "hiking, painting", "multi-hop") == pytest.approx(0.5)
    # open-domain: only the part before ';' counts
    assert locomo_f1("counseling", "counseling; maybe psychology", "open-domain") == 1.0
    assert locomo_f1("That is not mentioned.", "Sweden", "adversarial") == 1.0
    assert locomo_f1("Sweden", "Sweden", "adversarial") == 0.0
    assert says_unanswerable("No information available about that")
    assert locomo_f1("7 May 2023", "May 2023", "temporal") == pytest.approx(0.8)
