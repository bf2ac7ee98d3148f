"""The quality checks of RoleMemo-style synthesis that need no LLM (plain functions).

- 4-criteria insight check: keep an insight only when all four verdicts are yes.
- memory necessity: keep a pair only when the closed-book answer misses the insight.
- difficulty: each fragment sits in exactly one user turn (its planned round) and no
  assistant turn echoes it. "Sits in" is measured as the share of the fragment's content
  words a turn holds, so paraphrases that keep the details still count.
- safety: a regex pass; flagged dialogues go to an LLM review (a separate call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mnemoray.config.synth import CRITERIA

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been being am i me my "
    "mine we our you your he she it its they them their this that these those there here do does did have has had "
    "not no yes just very really also too about into over under up down out off again more most some any all each "
    "can could would should will shall may might must what which who whom when where why how than like get got "
    "because while im ive id dont its".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def overlap(fragment: str, turn: str) -> float:
    """Share of the fragment's content words found in the turn (0 when it has none)."""
    words = content_words(fragment)
    if not words:
        return 0.0
    return len(words & content_words(turn)) / len(words)


def failed_criteria(verdict: dict) -> list[str]:
    """Criteria answered anything but yes (missing counts as no)."""
    return [c for c in CRITERIA if verdict.get(c) is not True]


def needs_memory(judgement: dict) -> bool:
    return judgement.get("verdict") == "misses_insight"


@dataclass(frozen=True)
class Placement:
    fragment_id: str
    text: str
    round: int


def plan_rounds(n_fragments: int, rounds: int, key: int) -> list[int]:
    """Distinct rounds for the fragments, spread over the dialogue, varied by `key`.

    Fragment i goes into the i-th equal slice of the dialogue; never the first round, so
    every fragment has small talk before it.
    """
    if n_fragments > rounds - 1:
        raise ValueError(f"{n_fragments} fragments do not fit in {rounds} rounds")
    usable = rounds - 1
    out = []
    for i in range(n_fragments):
        lo = 1 + i * usable // n_fragments
        hi = 1 + (i + 1) * usable // n_fragments
        out.append(lo + (key + 7 * i) % max(1, hi - lo))
    return out


def insert_missing(rounds: list[dict], placements: list[Placement], min_overlap: float) -> int:
    """Append each fragment its writer left out to its planned user turn; returns how many."""
    inserted = 0
    for p in placements:
        turn = rounds[p.round]
        if overlap(p.text, turn["user"]) < min_overlap:
            turn["user"] = f"{turn['user'].rstrip()} {p.text}".strip()
            inserted += 1
    return inserted


def difficulty_problems(rounds: list[dict], placements: list[Placement], min_overlap: float,
                        echo_overlap: float) -> list[str]:
    """Why a dialogue fails the difficulty check (empty: it passes)."""
    problems: list[str] = []
    for p in placements:
        holders = [i for i, r in enumerate(rounds) if overlap(p.text, r["user"]) >= min_overlap]
        if p.round not in holders:
            problems.append(f"fragment_missing:{p.fragment_id}@{p.round}")
        elif len(holders) > 1:
            problems.append(f"fragment_repeated:{p.fragment_id}@{','.join(map(str, holders))}")
        echoes = [i for i, r in enumerate(rounds) if overlap(p.text, r["assistant"]) >= echo_overlap]
        if echoes:
            problems.append(f"assistant_echo:{p.fragment_id}@{','.join(map(str, echoes))}")
    return problems


_SAFETY_PATTERNS = {
    "self_harm": r"\b(kill (my|your)self|suicid\w*|self[- ]harm|cut(ting)? myself)\b",
    "violence": r"\b(murder\w*|shoot (him|her|them|you)|stab\w*|bomb (a|the)|terroris\w*)\b",
    "sexual_minors": r"\b(child|minor|underage)\w*\b.{0,40}\b(sex\w*|nude\w*|explicit)\b",
    "weapons": r"\b(build|make|assemble) (a )?(bomb|explosive|gun)\b",
    "drugs": r"\b(cook|synthesi[sz]e) (meth|heroin|fentanyl)\b",
    "contact_data": r"(\b\d{3}[-. ]\d{3}[-. ]\d{4}\b|\b[\w.+-]+@[\w-]+\.[a-z]{2,}\b|\b\d{3}-\d{2}-\d{4}\b)",
}
_COMPILED = {name: re.compile(p, re.IGNORECASE) for name, p in _SAFETY_PATTERNS.items()}


def safety_flags(texts: list[str]) -> list[str]:
    """Names of the patterns any text matches (sorted, unique)."""
    return sorted({name for name, rx in _COMPILED.items() for t in texts if rx.search(t)})
