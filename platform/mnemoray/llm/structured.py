"""Structured output that never loses data: tolerant parse, validate, retry, typed failure.

Engines that can constrain decoding do so, but every engine's output is still parsed and
validated here: models wrap JSON in prose, code fences or <think> blocks, and remote
endpoints may ignore a schema. A request whose output does not validate is retried with
the reason fed back; after the last retry it comes back as a typed failure
(`error_kind` "parse" or "schema") with the raw text kept.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, Engine, Usage

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ECHO_CHARS = 4000  # how much of a rejected answer goes back to the model (bounded prompt growth)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


class ParseError(ValueError):
    """No JSON value could be recovered from the text."""


class SchemaError(ValueError):
    """The JSON value does not match the schema (or pydantic model)."""


class InvalidSchema(SchemaError):
    """The schema itself is broken: asking the model again cannot help."""


def _strip_thinking(text: str) -> str:
    text = _THINK.sub("", text)
    lowered = text.lower()
    if "</think>" in lowered:  # opening tag lost (e.g. part of the prompt): keep the answer after it
        text = text[lowered.rindex("</think>") + len("</think>") :]
    elif "<think>" in lowered:  # unterminated reasoning: whatever precedes it is the answer
        text = text[: lowered.index("<think>")]
    return text.strip()


def _first_json_value(text: str) -> Any:
    """The first complete JSON object/array in the text, skipping prose around it."""
    decoder = json.JSONDecoder(strict=False)
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ParseError("no complete JSON object or array in the output")


def extract_json(text: str) -> Any:
    """Recover one JSON value from model output, trying strict to lenient readings in order."""
    body = _strip_thinking(text or "")
    if not body:
        raise ParseError("no answer after the reasoning block" if (text or "").strip() else "empty output")
    candidates = [m.group(1).strip() for m in _FENCE.finditer(body)] + [body]
    for candidate in candidates:
        try:
            return json.loads(candidate, strict=False)  # strict=False: raw control chars in strings
        except json.JSONDecodeError:
            pass
    for candidate in candidates:
        try:
            return _first_json_value(candidate)
        except ParseError:
            pass
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ParseError("no JSON object or array in the output")
    import json_repair

    try:
        repaired = json_repair.loads(body[start:])
    except Exception as err:  # noqa: BLE001 - repair is best effort
        raise ParseError(f"unrepairable JSON: {err}") from None
    if not isinstance(repaired, (dict, list)) or (not repaired and len(body[start:].strip()) > 2):
        raise ParseError("invalid JSON that could not be repaired")
    return repaired


def check_schema(schema: Any) -> Any:
    """The JSON-schema validator class for `schema`; raises InvalidSchema if it is broken."""
    import jsonschema

    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except (jsonschema.SchemaError, TypeError, AttributeError) as err:
        raise InvalidSchema(f"the JSON schema itself is invalid: {getattr(err, 'message', err)}") from None
    return validator_cls


@functools.lru_cache(maxsize=512)
def _checked_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return check_schema(schema)(schema)


def schema_validator(schema: dict[str, Any]) -> Any:
    """A validator for `schema`, checked once per distinct schema (checking the schema against
    its meta-schema costs far more than validating one answer; callers send the same few
    schemas over and over). Raises InvalidSchema if it is broken."""
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):  # not JSON at all: let the check name the problem
        return check_schema(schema)(schema)
    return _checked_validator(key)


def validate(value: Any, schema: dict[str, Any] | type[BaseModel]) -> Any:
    """Return the validated value (a model instance for a pydantic model) or raise SchemaError."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(value)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
            raise SchemaError(f"{loc}: {first.get('msg')}") from None
    import jsonschema

    error = jsonschema.exceptions.best_match(schema_validator(schema).iter_errors(value))
    if error is not None:
        loc = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise SchemaError(f"{loc}: {error.message}")
    return value


def parse_and_validate(text: str, schema: dict[str, Any] | type[BaseModel]) -> Any:
    return validate(extract_json(text), schema)


def feedback_request(request: ChatRequest, result: ChatResult, reason: str) -> ChatRequest:
    """The same request plus the bad answer and why it was rejected."""
    schema_text = json.dumps(request.json_schema, ensure_ascii=False)
    note = (
        f"Your previous reply could not be used: {reason}. Reply again with only one JSON value "
        f"that matches this JSON schema, with no other text:\n{schema_text}"
    )
    messages = list(request.messages) + [
        ChatMessage(role="assistant", content=result.text[:_ECHO_CHARS]),
        ChatMessage(role="user", content=note),
    ]
    return request.model_copy(update={"messages": messages})


def generate_structured(
    engine: Engine,
    requests: list[ChatRequest],
    max_retries: int = 2,
    model: type[BaseModel] | None = None,
) -> list[ChatResult]:
    """Generate, then parse+validate every request that has a json_schema; retry bad ones.

    `model`: an optional pydantic model; requests without a json_schema get its schema and
    `parsed` becomes a model instance. Requests without any schema pass through untouched.
    Results keep request order and ids; usage, latency and `attempts` (the engine's own
    tries, e.g. HTTP retries) add up over the rounds a request took.
    """
    if model is not None:
        schema = model.model_json_schema()
        requests = [r if r.json_schema is not None else r.model_copy(update={"json_schema": schema}) for r in requests]
    final: list[ChatResult | None] = [None] * len(requests)
    usage = [Usage() for _ in requests]
    latency = [0.0] * len(requests)
    attempts = [0] * len(requests)
    pending = list(range(len(requests)))
    current = list(requests)
    for _round in range(max(0, max_retries) + 1):
        if not pending:
            break
        outputs = engine.generate([current[i] for i in pending])
        if len(outputs) != len(pending):  # a broken engine must not make results vanish
            outputs = [ChatResult(id=current[i].id, error=f"engine returned {len(outputs)} results for "
                                  f"{len(pending)} requests", error_kind="engine") for i in pending]
        retry: list[int] = []
        for i, out in zip(pending, outputs):
            usage[i] = Usage(
                prompt_tokens=usage[i].prompt_tokens + out.usage.prompt_tokens,
                completion_tokens=usage[i].completion_tokens + out.usage.completion_tokens,
            )
            latency[i] += out.latency_s
            attempts[i] += out.attempts
            update: dict[str, Any] = {"id": requests[i].id, "usage": usage[i], "latency_s": latency[i],
                                      "attempts": attempts[i]}
            schema = requests[i].json_schema
            if schema is None or not out.ok:
                final[i] = out.model_copy(update=update)  # engine errors are the engine's to retry
                continue
            try:
                parsed = parse_and_validate(out.text, model if model is not None else schema)
            except (ParseError, SchemaError) as err:
                kind = "parse" if isinstance(err, ParseError) else "schema"
                final[i] = out.model_copy(update={**update, "parsed": None, "error": str(err), "error_kind": kind})
                if not isinstance(err, InvalidSchema):
                    retry.append(i)
                    current[i] = feedback_request(requests[i], out, str(err))
                continue
            final[i] = out.model_copy(update={**update, "parsed": parsed, "error": None, "error_kind": None})
        pending = retry
    return [r for r in final if r is not None]
