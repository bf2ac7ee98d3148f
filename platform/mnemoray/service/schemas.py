"""Request bodies of the memory API and the one error type the API turns into a status.

Bodies are strict (an unknown key is an error naming it), except that a `user_id` is
refused with its own message: the tenant comes from the API key and only from it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SPOOF_KEYS = ("user_id", "tenant", "tenant_id", "agent_id")


class ServiceError(Exception):
    """An expected failure with the HTTP status it maps to (never a 500)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def not_found(what: str) -> ServiceError:
    return ServiceError(404, f"{what} not found", "not_found_error")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refuse_identity: ClassVar[bool] = True  # tenant bodies: a user/tenant id must not be sent


class TenantIn(Body):
    refuse_identity: ClassVar[bool] = False
    tenant: str = Field(description="lowercase letters, digits, '-' and '_', at most 63")
    framework: str | None = Field(None, description="a registered memory framework (default: the service's)")

    @field_validator("tenant")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TENANT_NAME.match(value):
            raise ValueError("a tenant name is 1-63 lowercase letters, digits, '-' or '_' "
                             "(starting with a letter or digit)")
        return value

    @field_validator("framework")
    @classmethod
    def _framework(cls, value: str | None) -> str | None:
        if value is not None:
            from mnemoray.memory.registry import FRAMEWORKS

            FRAMEWORKS.check(value)
        return value


class TurnIn(Body):
    speaker: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=100_000)


class PersonaIn(Body):
    id: str | None = None
    name: str = ""
    description: str = ""
    facts: list[str] = Field(default_factory=list)


class SessionIn(Body):
    session_id: str = Field(min_length=1, max_length=200)
    date: str | None = Field(None, max_length=100)
    turns: list[TurnIn] = Field(min_length=1, max_length=10_000)
    persona: PersonaIn | None = None


class SearchIn(Body):
    query: str = Field(min_length=1, max_length=20_000)
    k: int = Field(5, ge=1, le=100)


class ImportIn(Body):
    format: str
    framework: str
    version: int = Field(ge=0)
    snapshot: Any
    items: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    history: list[dict[str, Any]] = Field(default_factory=list)


def field_errors(err: ValidationError) -> str:
    """Every problem of a body as `field 'a.b': reason`, joined (what a 422 says)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}")
    return "; ".join(parts)


def parse_body(model: type[Body], data: Any) -> Any:
    """`data` as `model`, or a 422 ServiceError naming every bad field."""
    if not isinstance(data, dict):
        raise ServiceError(422, f"body must be a JSON object, got {type(data).__name__}")
    if model.refuse_identity:
        spoofed = [k for k in SPOOF_KEYS if k in data]
        if spoofed:
            raise ServiceError(422, f"field '{spoofed[0]}': not accepted; the tenant comes from the API key")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ServiceError(422, field_errors(err)) from None
