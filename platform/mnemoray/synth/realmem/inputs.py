"""Persona seeds for RealMem-style synthesis, each with the goals (projects) it works on.

Accepted inputs:
- RealMem's own files: the `all_persona_topic/` folder, or `persona_all.json` / `person&goal.json`
  inside it (the three files are read together: profiles, assigned goals, topic attributes);
- any JSON array or JSONL of records `{name, description? | facts? | other profile fields,
  goals? | assigned_tasks?}`; a record without goals gets goals from the topics file
  (`topic&goal&attr.json`) when one is given.

Invalid records come back as `DatasetError`s naming file, record, field and reason; the rest
is used. Persona ids hash the name (RealMem names are unique) or the given id, so every run
gives a persona the same id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnemoray.ids import stable_id
from mnemoray.loaders.errors import DatasetError

PERSONAS_FILE = "persona_all.json"
GOALS_FILE = "person&goal.json"
TOPICS_FILE = "topic&goal&attr.json"
PROFILE_SKIP = ("name", "persona_name", "id", "goals", "assigned_tasks")


def _read_json(path: Path) -> tuple[Any, DatasetError | None]:
    if not path.is_file():
        return None, DatasetError(path, None, None, "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except json.JSONDecodeError as err:
        return None, DatasetError(path, None, None, f"malformed JSON ({err.msg} at line {err.lineno})")


def _flatten(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _flatten(v, f"{prefix}{k.replace('_', ' ')}: "
                                                                    if not isinstance(v, dict) else f"{k}. ")]
    if isinstance(value, list):
        return [f"{prefix}{', '.join(str(v) for v in value)}"] if value else []
    text = str(value).strip()
    return [f"{prefix}{text}"] if text else []


def profile_text(record: dict[str, Any]) -> str:
    """A readable profile from any persona record (name first, then every other field)."""
    name = record.get("name") or record.get("persona_name") or ""
    lines = [f"Name: {name}"] if name else []
    for key, value in record.items():
        if key in PROFILE_SKIP:
            continue
        if key in ("description", "persona") and isinstance(value, str):
            lines.append(value.strip())
        elif key == "facts" and isinstance(value, list):
            lines += [f"- {f}" for f in value if isinstance(f, str) and f.strip()]
        else:
            lines += _flatten(value, f"{key.replace('_', ' ')}: " if not isinstance(value, dict) else "")
    return "\n".join(line for line in lines if line)


def load_topics(path: Path | None) -> tuple[dict[str, dict[str, Any]], list[DatasetError]]:
    """topic_id -> {topic_name, attributes, tasks} from `topic&goal&attr.json`."""
    if path is None:
        return {}, []
    data, err = _read_json(path)
    if err:
        return {}, [err]
    raw = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return {}, [DatasetError(path, None, "topics", "expected a list of topics")]
    topics, errors = {}, []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or not isinstance(t.get("topic_id"), str) or not t["topic_id"].strip():
            errors.append(DatasetError(path, f"topics[{i}]", "topic_id", "missing or not a string"))
            continue
        attrs = t.get("project_attributes") or []
        tasks = [x for x in t.get("tasks") or [] if isinstance(x, dict) and isinstance(x.get("title"), str)]
        topics[t["topic_id"]] = {"topic_name": str(t.get("topic_name") or t["topic_id"]),
                                 "attributes": [str(a) for a in attrs if isinstance(a, str)], "tasks": tasks}
    return topics, errors


def topic_name(topic_id: str, topics: dict[str, dict[str, Any]]) -> str:
    if topic_id in topics:
        return topics[topic_id]["topic_name"]
    return " ".join(w.capitalize() for w in topic_id.replace("-", "_").split("_") if w) or "General"


def _goal(raw: Any, file: Path, record: str, field: str, topics: dict[str, dict[str, Any]],
          pid: str) -> dict[str, Any] | DatasetError:
    if not isinstance(raw, dict):
        return DatasetError(file, record, field, f"expected an object, got {type(raw).__name__}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        return DatasetError(file, record, f"{field}.title", "missing or empty")
    description = raw.get("description", "")
    if not isinstance(description, str):
        return DatasetError(file, record, f"{field}.description", "expected a string")
    topic_id = raw.get("topic_id") or raw.get("topic") or "general"
    if not isinstance(topic_id, str):
        return DatasetError(file, record, f"{field}.topic_id", "expected a string")
    attrs = topics.get(topic_id, {}).get("attributes") or ["Planning", "Progress", "Other Inquiries"]
    return {"id": f"g-{stable_id(pid, title.strip(), topic_id)[:12]}", "topic_id": topic_id,
            "topic_name": topic_name(topic_id, topics), "title": title.strip(), "description": description.strip(),
            "attributes": attrs}


def _goals(raw: Any, file: Path, record: str, field: str, topics: dict[str, dict[str, Any]],
           pid: str) -> list[dict[str, Any]] | DatasetError:
    if not isinstance(raw, list):
        return DatasetError(file, record, field, f"expected a list of goals, got {type(raw).__name__}")
    goals = []
    for i, g in enumerate(raw):
        got = _goal(g, file, record, f"{field}[{i}]", topics, pid)
        if isinstance(got, DatasetError):
            return got
        goals.append(got)
    return goals


def _fallback_goals(pid: str, topics: dict[str, dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Goals drawn from the topics file's example tasks, the same for a persona in every run."""
    pool = [(tid, task) for tid, t in sorted(topics.items()) for task in t["tasks"]]
    if not pool:
        return []
    start = int(stable_id(pid)[:8], 16)
    picked = [pool[(start + 7 * i) % len(pool)] for i in range(min(n, len(pool)))]
    out = []
    for tid, task in picked:
        g = _goal({**task, "topic_id": tid}, Path("."), "", "", topics, pid)
        if isinstance(g, dict):
            out.append(g)
    return out


def persona_seed(name: str, profile: str, goals: list[dict[str, Any]], given_id: Any = None) -> dict[str, Any]:
    pid = f"p-{given_id}" if isinstance(given_id, (str, int)) and str(given_id).strip() else f"p-{stable_id(name)}"
    return {"id": pid, "persona_id": pid, "name": name, "profile": profile, "goals": goals}


def file_name(name: str) -> str:
    """The file stem RealMem uses for a persona (`Kenta Tanaka` -> `Kenta_Tanaka`)."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip().replace(" ", "_"))
    return cleaned.strip("_") or "persona"


def _realmem_folder(folder: Path, topics: dict[str, dict[str, Any]], n_goals: int
                    ) -> tuple[list[dict[str, Any]], list[DatasetError]]:
    errors: list[DatasetError] = []
    profiles_path, goals_path = folder / PERSONAS_FILE, folder / GOALS_FILE
    profiles, err = _read_json(profiles_path)
    if err:
        errors.append(err)
        profiles = []
    if not isinstance(profiles, list):
        errors.append(DatasetError(profiles_path, None, None, "expected a JSON array of personas"))
        profiles = []
    assigned, err = _read_json(goals_path) if goals_path.is_file() else ([], None)
    if err:
        errors.append(err)
        assigned = []
    if not isinstance(assigned, list):
        errors.append(DatasetError(goals_path, None, None, "expected a JSON array of persona goals"))
        assigned = []
    goals_by_name: dict[str, tuple[int, Any]] = {}
    for i, g in enumerate(assigned):
        if not isinstance(g, dict) or not isinstance(g.get("persona_name"), str):
            errors.append(DatasetError(goals_path, f"[{i}]", "persona_name", "missing or not a string"))
            continue
        goals_by_name[g["persona_name"].strip()] = (i, g)
    seeds, seen = [], set()
    order = [(profiles_path, i, p) for i, p in enumerate(profiles)]
    names_with_profile = {p.get("name", "").strip() for _, _, p in order if isinstance(p, dict)
                          and isinstance(p.get("name"), str)}
    order += [(goals_path, i, {"name": n, "role": g.get("role", "")}) for n, (i, g) in goals_by_name.items()
              if n not in names_with_profile]
    for file, i, raw in order:
        record = f"[{i}]"
        if not isinstance(raw, dict):
            errors.append(DatasetError(file, record, None, f"expected an object, got {type(raw).__name__}"))
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(DatasetError(file, record, "name", "missing or empty"))
            continue
        name = name.strip()
        if name in seen:
            errors.append(DatasetError(file, record, "name", f"duplicate persona {name!r} (first one kept)"))
            continue
        pid = persona_seed(name, "", []).get("id")
        goals: list[dict[str, Any]] | DatasetError = []
        if name in goals_by_name:
            gi, g = goals_by_name[name]
            goals = _goals(g.get("assigned_tasks"), goals_path, f"[{gi}]", "assigned_tasks", topics, pid)
            if isinstance(goals, DatasetError):
                errors.append(goals)
                continue
        if not goals:
            goals = _fallback_goals(pid, topics, n_goals)
        if not goals:
            errors.append(DatasetError(goals_path if name in goals_by_name else file, record, "assigned_tasks",
                                       f"no goals for {name!r} (and no topics file to draw them from)"))
            continue
        seen.add(name)
        seeds.append(persona_seed(name, profile_text(raw), goals))
    return seeds, errors


def _generic(file: Path, topics: dict[str, dict[str, Any]], n_goals: int
             ) -> tuple[list[dict[str, Any]], list[DatasetError]]:
    records: list[tuple[str, Any]] = []
    errors: list[DatasetError] = []
    if file.suffix == ".jsonl":
        for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                errors.append(DatasetError(file, f"line {lineno}", None, f"malformed JSON ({err.msg})"))
    else:
        data, err = _read_json(file)
        if err:
            return [], [err]
        if not isinstance(data, list):
            return [], [DatasetError(file, None, None, "expected a JSON array (or JSONL) of persona records")]
        records = [(f"[{i}]", r) for i, r in enumerate(data)]
    seeds, seen = [], set()
    for record, raw in records:
        if not isinstance(raw, dict):
            errors.append(DatasetError(file, record, None, f"expected an object, got {type(raw).__name__}"))
            continue
        name = raw.get("name") or raw.get("persona_name")
        if not isinstance(name, str) or not name.strip():
            errors.append(DatasetError(file, record, "name", "missing or empty"))
            continue
        profile = profile_text(raw)
        if profile.strip() == f"Name: {name.strip()}":
            errors.append(DatasetError(file, record, "description", "empty persona (no profile besides the name)"))
            continue
        seed = persona_seed(name.strip(), profile, [], raw.get("id"))
        key = "goals" if "goals" in raw else "assigned_tasks"
        goals = _goals(raw[key], file, record, key, topics, seed["id"]) if key in raw else []
        if isinstance(goals, DatasetError):
            errors.append(goals)
            continue
        goals = goals or _fallback_goals(seed["id"], topics, n_goals)
        if not goals:
            errors.append(DatasetError(file, record, "goals", "no goals (and no topics file to draw them from)"))
            continue
        if seed["id"] in seen:
            errors.append(DatasetError(file, record, "name", f"duplicate persona {name!r} (first one kept)"))
            continue
        seen.add(seed["id"])
        seed["goals"] = goals
        seeds.append(seed)
    return seeds, errors


def load_personas(path: str | Path, goals_file: str | Path | None = None, limit: int | None = None,
                  projects: int = 3) -> tuple[list[dict[str, Any]], list[DatasetError]]:
    """Persona seeds (each with its first `projects` goals) and every invalid record."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    realmem = path.is_dir() or path.name in (PERSONAS_FILE, GOALS_FILE)
    topics_path = Path(goals_file) if goals_file else (folder / TOPICS_FILE if (folder / TOPICS_FILE).is_file()
                                                       else None)
    topics, errors = load_topics(topics_path)
    if not path.exists():
        return [], [DatasetError(path, None, None, "no such persona file or folder")]
    if realmem:
        seeds, more = _realmem_folder(folder, topics, projects)
    else:
        seeds, more = _generic(path, topics, projects)
    errors += more
    for s in seeds:
        s["goals"] = s["goals"][:projects]
    return (seeds[:limit] if limit else seeds), errors
