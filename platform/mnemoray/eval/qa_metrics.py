"""Judge-free QA figures: token F1 with LoCoMo's official normalization, and BLEU-1.

Normalization follows snap-research/locomo `task_eval/evaluation.py`: drop commas, lowercase,
drop ASCII punctuation, drop the words a/an/the/and, collapse whitespace. The official F1
also Porter-stems tokens; that needs nltk, so stemming is optional here and every run
records whether it was used (`stemmer_name()`), keeping figures comparable across machines.
LoCoMo's per-category rules (multi-hop: gold split on commas, open-domain: first `;` part,
adversarial: did the answer say it is not mentioned) are in `locomo_f1`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
ABSTAIN_PHRASES = ("no information available", "not mentioned")


def normalize_answer(text: str) -> str:
    s = str(text or "").replace(",", "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


@lru_cache(maxsize=1)
def _porter() -> Callable[[str], str] | None:
    try:
        from nltk.stem import PorterStemmer
    except ImportError:
        return None
    return PorterStemmer().stem


def stemmer_name() -> str:
    """'porter' when nltk is installed (official LoCoMo F1), else 'none'."""
    return "porter" if _porter() is not None else "none"


def tokens(text: str, stem: bool = False) -> list[str]:
    toks = normalize_answer(text).split()
    stemmer = _porter() if stem else None
    return [stemmer(t) for t in toks] if stemmer else toks


def token_f1(prediction: str, gold: str, stem: bool = False) -> float:
    """Multiset token overlap F1; two empty answers agree (1.0), one empty one scores 0."""
    p, g = tokens(prediction, stem), tokens(gold, stem)
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, gold: str) -> float:
    """Clipped unigram precision times the brevity penalty exp(1 - r/c) when c < r."""
    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    clipped = sum((Counter(p) & Counter(g)).values())
    precision = clipped / len(p)
    bp = 1.0 if len(p) >= len(g) else math.exp(1 - len(g) / len(p))
    return bp * precision


def says_unanswerable(prediction: str) -> bool:
    low = str(prediction or "").lower()
    return any(phrase in low for phrase in ABSTAIN_PHRASES)


def locomo_f1(prediction: str, gold: str, category: str | None, stem: bool = False) -> float:
    """LoCoMo's category-aware F1 (category names as the loader gives them)."""
    if category == "adversarial":
        return float(says_unanswerable(prediction))
    if category == "open-domain":
        gold = gold.split(";")[0].strip()
    if category == "multi-hop":
        parts = [g.strip() for g in gold.split(",") if g.strip()]
        preds = [p.strip() for p in prediction.split(",")] or [""]
        if parts:
            return sum(max(token_f1(p, g, stem) for p in preds) for g in parts) / len(parts)
    return token_f1(prediction, gold, stem)
