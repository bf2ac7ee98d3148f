"""The prompts and JSON schemas of the RealMem-style agents (planner, user, assistant, goal
evaluator). The memory manager uses the `realmem` memory framework's own prompts.

Templates use `$field` placeholders (`string.Template`), like every prompt of the repository;
array sizes are set per call (`sized`) so constrained decoding produces valid plans.
"""

from __future__ import annotations

import copy
from string import Template
from typing import Any

from mnemoray.memory.prompts import PromptSpec

EVENT_STATES = ("create", "update", "suspend", "downgrade")
FRAMEWORK = "realmem_synth"


def _spec(name: str, system: str, user: str, schema: dict[str, Any]) -> PromptSpec:
    return PromptSpec(FRAMEWORK, name, system.strip(), Template(user.strip()), schema)


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": False}


STRING = {"type": "string", "minLength": 1}

OUTLINE = _spec(
    "outline",
    "You plan long-running personal projects. Given a person and one goal, write the project's blueprint: "
    "a short name, a summary and its phases in order. Answer with JSON only.",
    """Person:
$persona

Goal ($topic): $title
$description

Aspects this kind of project covers: $attributes

Write a blueprint with exactly $phases phases.""",
    _obj({"project_name": STRING, "summary": STRING,
          "phases": {"type": "array", "items": _obj({"name": STRING, "objective": STRING})}}),
)

EVENTS = _spec(
    "events",
    "You turn a project blueprint into a dated sequence of events in the person's life. Each event changes the "
    "project's state: create (something new starts), update (a plan or fact changes), suspend (paused or "
    "dropped) or downgrade (scaled down). Dates are YYYY-MM-DD, in order, within the given window. "
    "Answer with JSON only.",
    """Person:
$persona

Project: $project_name ($topic)
$summary
Phases:
$phases

Aspects: $attributes
Window: from $start to $end.
Write between $min_events and $max_events events.""",
    _obj({"events": {"type": "array", "items": _obj({
        "name": STRING, "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "state": {"enum": list(EVENT_STATES)}, "attribute": STRING, "detail": STRING})}}),
)

SUMMARIES = _spec(
    "summaries",
    "You plan the conversations a person has with an AI assistant around one event of a project. Each session "
    "summary says what the person wants from that conversation and what should be settled by its end. "
    "Answer with JSON only.",
    """Person:
$persona

Project: $project_name ($topic)
Event on $date ($state, $attribute): $event
$detail

Plan between 1 and $max_sessions sessions about this event.""",
    _obj({"sessions": {"type": "array", "minItems": 1, "items": _obj({"summary": STRING, "goal": STRING})}}),
)

USER = _spec(
    "user",
    "You play the person described below, talking to an AI assistant today ($date). You know only what happened "
    "up to today: never mention anything planned or happening after today. Write the person's next message: "
    "natural, specific, one message only. Answer with JSON only.",
    """Person:
$persona

What you know so far (up to $date):
$known

This conversation: $summary
What you want by its end: $goal

Conversation so far:
$transcript

Your next message:""",
    _obj({"message": STRING}),
)

ASSISTANT = _spec(
    "assistant",
    "You are a helpful assistant with long-term memory of earlier conversations with this user. Use a memory "
    "point only when it really helps your reply, and list the handles of the points you used. Answer with JSON "
    "only.",
    """Today: $date
Memory from earlier conversations:
$memory

Conversation so far:
$transcript

Reply to the user's last message.""",
    _obj({"reply": STRING, "used_memory": {"type": "array", "items": {"type": "string"}}}),
)

EVALUATOR = _spec(
    "evaluator",
    "You judge whether a conversation between a user and an assistant has reached the user's goal for it. Score "
    "the progress from 0 (nothing) to 10 (fully reached). Answer with JSON only.",
    """The user's goal for this conversation: $goal

Conversation:
$transcript""",
    _obj({"progress": {"type": "integer", "minimum": 0, "maximum": 10}, "goal_reached": {"type": "boolean"},
          "reason": STRING}),
)


def sized(schema: dict[str, Any], path: tuple[str, ...], lo: int, hi: int) -> dict[str, Any]:
    """A copy whose array at `path` (property names) holds between `lo` and `hi` items."""
    out = copy.deepcopy(schema)
    node = out
    for key in path:
        node = node["properties"][key]
    node["minItems"], node["maxItems"] = lo, hi
    return out


def restrict_handles(schema: dict[str, Any], handles: list[str]) -> dict[str, Any]:
    """The assistant's schema whose `used_memory` may name only `handles` (none: empty)."""
    out = copy.deepcopy(schema)
    arr = out["properties"]["used_memory"]
    if handles:
        arr["items"] = {"enum": list(handles)}
        arr["maxItems"] = len(handles)
    else:
        arr["maxItems"] = 0
    return out
