"""Planning stages of RealMem-style synthesis: build each call, parse and validate its answer.

project outline (blueprint) per goal -> 3N-5N dated events with a state change each ->
1..max session plans per event -> one timeline per persona (projects interleaved with a
cooldown, dates never going back). Ids hash the persona, goal and positions, never
generated text, so a rerun addresses the same records. Plain Python, no Ray.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.ids import stable_id
from mnemoray.llm.types import ChatRequest, ChatResult, SamplingParams
from mnemoray.memory.prompts import PromptSpec, clamp_schema
from mnemoray.synth.realmem import prompts as P


class Invalid(ValueError):
    """An answer that fails its stage's validator: `reason` is the reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def seed_of(*parts: Any) -> int:
    return int(stable_id(*parts)[:8], 16)


def make_request(stage: str, key: str, cfg: RealMemSynthConfig, prompt: PromptSpec,
                 schema: dict[str, Any] | None = None, **fields: Any) -> ChatRequest:
    """One call: a deterministic id and seed (from the stage and key), the clamped schema."""
    schema = clamp_schema(schema or prompt.schema, cfg.call.max_text_chars, 10_000)
    return ChatRequest(id=f"{stage}:{key}", messages=prompt.messages(**fields),
                       params=SamplingParams(temperature=cfg.call.temperature, max_tokens=cfg.call.max_tokens),
                       seed=seed_of(stage, key, cfg.seed), json_schema=schema, metadata={"stage": stage})


def parsed_of(result: ChatResult | None) -> dict[str, Any]:
    """The parsed JSON object of a call, or Invalid with the call's failure as the reason."""
    if result is None:
        raise Invalid("llm_missing", "no answer came back")
    if not result.ok:
        raise Invalid(f"llm_{result.error_kind or 'error'}", result.error or "")
    if not isinstance(result.parsed, dict):
        raise Invalid("llm_parse", "no JSON object")
    return result.parsed


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("empty_field", f"{field} is missing or empty")
    return value.strip()


def parse_date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def day_label(day: dt.date) -> str:
    """RealMem's `current_time`: `2025-12-19 (Friday)`."""
    return f"{day.isoformat()} ({day.strftime('%A')})"


# -- 1. project outline --------------------------------------------------------------------------

def project_id(persona_id: str, goal: dict[str, Any]) -> str:
    return f"prj-{stable_id(persona_id, goal['id'])[:12]}"


def build_outline(persona: dict[str, Any], goal: dict[str, Any], cfg: RealMemSynthConfig) -> ChatRequest:
    schema = P.sized(P.OUTLINE.schema, ("phases",), cfg.plan.phases, cfg.plan.phases)
    return make_request("outlines", project_id(persona["id"], goal), cfg, P.OUTLINE, schema,
                        persona=persona["profile"], topic=goal["topic_name"], title=goal["title"],
                        description=goal["description"], attributes=", ".join(goal["attributes"]),
                        phases=cfg.plan.phases)


def parse_outline(persona: dict[str, Any], goal: dict[str, Any], number: int, result: ChatResult | None,
                  cfg: RealMemSynthConfig) -> dict[str, Any]:
    parsed = parsed_of(result)
    phases = parsed.get("phases")
    if not isinstance(phases, list) or len(phases) != cfg.plan.phases:
        got = len(phases) if isinstance(phases, list) else "no"
        raise Invalid("wrong_phase_count", f"{got} phases, expected {cfg.plan.phases}")
    start = parse_date(cfg.plan.start_date) or dt.date(2025, 1, 6)
    return {
        "id": project_id(persona["id"], goal), "persona_id": persona["id"], "goal_id": goal["id"],
        "number": number, "topic_id": goal["topic_id"], "topic_name": goal["topic_name"], "title": goal["title"],
        "description": goal["description"], "attributes": goal["attributes"],
        "project_name": _text(parsed.get("project_name"), "project_name"),
        "summary": _text(parsed.get("summary"), "summary"),
        "phases": [{"name": _text(p.get("name") if isinstance(p, dict) else None, f"phases[{i}].name"),
                    "objective": _text(p.get("objective") if isinstance(p, dict) else None,
                                       f"phases[{i}].objective")} for i, p in enumerate(phases)],
        # projects start staggered so their sessions interleave from the first weeks
        "start": (start + dt.timedelta(days=3 * number)).isoformat(),
        "end": (start + dt.timedelta(days=3 * number + cfg.plan.project_days)).isoformat(),
    }


# -- 2. events -----------------------------------------------------------------------------------

def event_bounds(cfg: RealMemSynthConfig) -> tuple[int, int]:
    return 3 * cfg.plan.phases, 5 * cfg.plan.phases


def build_events(persona: dict[str, Any], outline: dict[str, Any], cfg: RealMemSynthConfig) -> ChatRequest:
    lo, hi = event_bounds(cfg)
    schema = P.sized(P.EVENTS.schema, ("events",), lo, hi)
    schema["properties"]["events"]["items"]["properties"]["date"] = {"type": "string", "format": "date"}
    phases = "\n".join(f"{i + 1}. {p['name']}: {p['objective']}" for i, p in enumerate(outline["phases"]))
    return make_request("events", outline["id"], cfg, P.EVENTS, schema, persona=persona["profile"],
                        project_name=outline["project_name"], topic=outline["topic_name"],
                        summary=outline["summary"], phases=phases, attributes=", ".join(outline["attributes"]),
                        start=outline["start"], end=outline["end"], min_events=lo, max_events=hi)


def _spread_dates(raw: list[dt.date | None], start: dt.date, end: dt.date) -> tuple[list[dt.date], int]:
    """Dates in order inside [start, end]: a missing, out-of-window or backwards date is replaced
    by one spaced evenly after the previous event; returns the dates and how many were replaced."""
    n = len(raw)
    span = max(1, (end - start).days)
    out: list[dt.date] = []
    repaired = 0
    for i, day in enumerate(raw):
        floor = out[-1] if out else start
        if day is None or day < floor or day > end:
            even = start + dt.timedelta(days=span * (i + 1) // (n + 1))
            day = max(floor, even)
            repaired += 1
        out.append(day)
    return out, repaired


def parse_events(outline: dict[str, Any], result: ChatResult | None, cfg: RealMemSynthConfig) -> dict[str, Any]:
    parsed = parsed_of(result)
    events = parsed.get("events")
    lo, hi = event_bounds(cfg)
    if not isinstance(events, list) or not lo <= len(events) <= hi:
        got = len(events) if isinstance(events, list) else "no"
        raise Invalid("wrong_event_count", f"{got} events, expected {lo}-{hi} (3N-5N, N={cfg.plan.phases})")
    rows = []
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            raise Invalid("bad_event", f"events[{i}] is not an object")
        state = str(e.get("state", "")).strip().lower()
        if state not in P.EVENT_STATES:
            raise Invalid("bad_event_state", f"events[{i}].state {e.get('state')!r} is not one of {P.EVENT_STATES}")
        rows.append({"index": i, "name": _text(e.get("name"), f"events[{i}].name"), "state": state,
                     "attribute": _text(e.get("attribute"), f"events[{i}].attribute"),
                     "detail": _text(e.get("detail"), f"events[{i}].detail"), "raw_date": str(e.get("date", ""))})
    if rows[0]["state"] != "create":
        rows[0]["state"] = "create"  # a project starts by being created, whatever the model wrote first
    start, end = dt.date.fromisoformat(outline["start"]), dt.date.fromisoformat(outline["end"])
    dates, repaired = _spread_dates([parse_date(r["raw_date"]) for r in rows], start, end)
    for r, d in zip(rows, dates):
        r["date"] = d.isoformat()
    return {"id": f"evs-{outline['id']}", "persona_id": outline["persona_id"], "project_id": outline["id"],
            "events": rows, "dates_repaired": repaired}


# -- 3. session plans ----------------------------------------------------------------------------

def event_key(project: str, index: int) -> str:
    return f"{project}#e{index}"


def build_summaries(persona: dict[str, Any], outline: dict[str, Any], event: dict[str, Any],
                    cfg: RealMemSynthConfig) -> ChatRequest:
    schema = P.sized(P.SUMMARIES.schema, ("sessions",), 1, cfg.plan.max_sessions_per_event)
    return make_request("session_plans", event_key(outline["id"], event["index"]), cfg, P.SUMMARIES, schema,
                        persona=persona["profile"], project_name=outline["project_name"],
                        topic=outline["topic_name"], date=event["date"], state=event["state"],
                        attribute=event["attribute"], event=event["name"], detail=event["detail"],
                        max_sessions=cfg.plan.max_sessions_per_event)


def session_uuid(persona_id: str, project: str, event: int, session: int) -> str:
    """8 hex digits, like RealMem's; unique within a persona."""
    return stable_id(persona_id, project, event, session)[:8]


def identifier_prefix(outline: dict[str, Any]) -> str:
    """`Knowledge_Learning_834`: the topic name and a number fixed by the project id."""
    return f"{outline['topic_name'].replace(' ', '_')}_{int(outline['id'][-6:], 16) % 1000}"


def parse_summaries(outline: dict[str, Any], event: dict[str, Any], result: ChatResult | None,
                    cfg: RealMemSynthConfig) -> list[dict[str, Any]]:
    parsed = parsed_of(result)
    sessions = parsed.get("sessions")
    if not isinstance(sessions, list) or not 1 <= len(sessions) <= cfg.plan.max_sessions_per_event:
        got = len(sessions) if isinstance(sessions, list) else "no"
        raise Invalid("wrong_session_count", f"{got} sessions, expected 1-{cfg.plan.max_sessions_per_event}")
    out = []
    for j, s in enumerate(sessions):
        if not isinstance(s, dict):
            raise Invalid("bad_session", f"sessions[{j}] is not an object")
        uuid = session_uuid(outline["persona_id"], outline["id"], event["index"], j)
        out.append({"id": uuid, "persona_id": outline["persona_id"], "project_id": outline["id"],
                    "event_index": event["index"], "session_index": j, "date": event["date"],
                    "identifier": f"{identifier_prefix(outline)}:S{event['index'] + 1}_{j + 1:02d}",
                    "summary": _text(s.get("summary"), f"sessions[{j}].summary"),
                    "goal": _text(s.get("goal"), f"sessions[{j}].goal")})
    return out


# -- 4. the timeline -----------------------------------------------------------------------------

def timeline(plans: list[dict[str, Any]], cooldown: int) -> list[dict[str, Any]]:
    """All session plans of a persona in the order they happen, each with `order` and `current_time`.

    Within a project the order is kept (event, then session). Across projects the earliest
    next session is taken, skipping a project that had one of the last `cooldown` sessions
    while another project still has sessions; a session never goes back in time (it takes
    the previous session's date when its own is earlier).
    """
    queues: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(plans, key=lambda p: (p["project_id"], p["event_index"], p["session_index"])):
        queues.setdefault(p["project_id"], []).append(p)
    out: list[dict[str, Any]] = []
    recent: list[str] = []
    clock: dt.date | None = None
    while any(queues.values()):
        heads = sorted(((q[0]["date"], pid) for pid, q in queues.items() if q))
        allowed = [h for h in heads if h[1] not in recent[-cooldown:]] if cooldown else heads
        _, pid = (allowed or heads)[0]
        plan = queues[pid].pop(0)
        day = max(dt.date.fromisoformat(plan["date"]), clock) if clock else dt.date.fromisoformat(plan["date"])
        clock = day
        out.append({**plan, "order": len(out), "current_time": day_label(day), "day": day.isoformat()})
        recent.append(pid)
    return out
