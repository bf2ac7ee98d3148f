"""Small datasets written by hand for tests: a RoleMemo-format run folder (the layout
`mnemoray synth rolememo` exports) with two personas and three questions."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PERSONAS = [
    {
        "id": "p-maya",
        "name": "Maya",
        "description": "A night-shift nurse in a busy city hospital who rarely talks about herself.",
        "facts": ["I work nights at the hospital.", "I live with my grandmother."],
        "topics": ["weekend plans", "cooking"],
        "queries": [
            {
                "id": "q-maya-1",
                "insight_type": "values",
                "insight": "Maya quietly puts her colleagues' needs before her own rest.",
                "fragments": [
                    "I swapped my only Saturday off so a coworker could see her son's school play.",
                    "I keep spare granola bars in my locker for whoever forgets to eat on shift.",
                ],
                "question": "If a coworker asked you to cover for them again this weekend, what would you say?",
            }
        ],
    },
    {
        "id": "p-tom",
        "name": "Tom",
        "description": "A retired sailor who restores old wooden boats in his garage.",
        "facts": ["I sailed cargo ships for thirty years.", "I have two grandchildren."],
        "topics": ["woodworking", "the weather"],
        "queries": [
            {
                "id": "q-tom-1",
                "insight_type": "habits",
                "insight": "Tom trusts slow, hands-on craft more than modern shortcuts.",
                "fragments": [
                    "I spent three months hand-sanding the hull instead of renting a power sander.",
                    "I still navigate with a paper chart and a compass when I take the dinghy out.",
                ],
                "question": "Would you buy one of those new fiberglass boats for your next project?",
            },
            {
                "id": "q-tom-2",
                "insight_type": "relationships",
                "insight": "Tom shows affection through teaching practical skills.",
                "fragments": [
                    "Every Sunday I teach my granddaughter how to tie a bowline knot.",
                    "I gave my grandson my old toolbox and showed him how to sharpen a chisel.",
                ],
                "question": "How do you like to spend time with your grandchildren?",
            },
        ],
    },
]
SMALL_TALK = {
    "weekend plans": ("I might just sleep in this weekend, honestly.", "That sounds like a well-earned rest."),
    "cooking": ("I tried a new lentil soup recipe yesterday.", "Lentil soup is a cozy choice for cold evenings."),
    "woodworking": ("Oak is my favourite wood to work with.", "Oak is sturdy and has a lovely grain."),
    "the weather": ("It has been windy all week here.", "Windy weeks can make outdoor work tricky."),
}
DISTRACTOR = ("Do you know any good podcasts about history?", "Many people enjoy long-form history podcasts.")


def _turns(session_id: str, pairs: list[tuple[str, str]], fragments: dict[int, str] | None = None) -> list[dict]:
    turns = []
    for r, (user, assistant) in enumerate(pairs):
        for offset, speaker, text in ((0, "user", user), (1, "assistant", assistant)):
            turns.append({"id": f"{session_id}#t{2 * r + offset}", "speaker": speaker, "text": text,
                          "index": 2 * r + offset, "is_query": False,
                          "fragment_id": (fragments or {}).get(r) if speaker == "user" else None})
    return turns


def write_rolememo_dataset(out: Path) -> Path:
    """`out/dataset/` with personas, sessions, histories and ground truth (Parquet + JSONL)."""
    folder = out / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    personas, sessions, histories, truth = [], [], [], []
    sessions.append({"id": "distractor-0", "kind": "distractor", "persona_id": "", "topic": "podcasts",
                     "turns": _turns("distractor-0", [DISTRACTOR]), "tokens": 30})
    for p in PERSONAS:
        personas.append({k: p[k] for k in ("id", "name", "description", "facts")})
        slots, day = [], 1

        def add(kind: str, source: str, session_id: str) -> None:
            nonlocal day
            slots.append({"session_id": session_id, "source_id": source, "kind": kind,  # noqa: B023 (add() runs within this iteration)
                          "timestamp": f"2024-03-{day:02d} 19:00", "tokens": 40})
            day += 1

        for qi, q in enumerate(p["queries"]):
            sid = f"{p['id']}-dlg{qi}"
            topic = p["topics"][qi % len(p["topics"])]
            pairs = [(q["fragments"][0], "That was kind of you."), SMALL_TALK[topic],
                     (q["fragments"][1], "Good to know.")]
            sessions.append({"id": sid, "kind": "dialogue", "persona_id": p["id"], "topic": topic,
                             "turns": _turns(sid, pairs, {0: f"{q['id']}-f0", 2: f"{q['id']}-f1"}), "tokens": 80})
            add("dialogue", sid, sid)
        add("distractor", "distractor-0", f"{p['id']}-dist")
        for q in p["queries"]:
            qsid = f"{p['id']}-{q['id']}-ask"
            sessions.append({"id": qsid, "kind": "query", "persona_id": p["id"], "topic": "",
                             "turns": [{"id": f"{qsid}#t0", "speaker": "user", "text": q["question"], "index": 0,
                                        "is_query": True, "fragment_id": None}], "tokens": 20})
            add("query", qsid, qsid)
            qi = p["queries"].index(q)
            truth.append({"id": q["id"], "history_id": f"h-{p['id']}", "persona_id": p["id"],
                          "persona": p["description"], "question": q["question"], "core_insight": q["insight"],
                          "core_fragments": q["fragments"], "insight_type": q["insight_type"],
                          "connector": "Both facts point to the insight.",
                          "evidence_turn_ids": [f"{p['id']}-dlg{qi}#t0", f"{p['id']}-dlg{qi}#t4"],
                          "session_id": qsid, "dialogue_id": f"{p['id']}-dlg{qi}"})
        histories.append({"id": f"h-{p['id']}", "persona_id": p["id"], "sessions": slots, "total_tokens": 300,
                          "target_tokens": 300, "n_queries": len(p["queries"]), "distractor_repeats": 0,
                          "dropped_dialogues": []})
    for name, rows in (("personas", personas), ("sessions", sessions), ("histories", histories),
                       ("ground_truth", truth)):
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
    with open(folder / "ground_truth.jsonl", "w", encoding="utf-8") as f:
        for row in truth:
            f.write(json.dumps(row) + "\n")
    return out
