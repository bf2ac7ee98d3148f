"""Dataset errors that name the file, the record and the field, so users can fix input fast."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class DatasetError(Exception):
    def __init__(self, file: str | Path, record: str | int | None, field: str | None, reason: str):
        self.file = str(file)
        self.record = record
        self.field = field
        self.reason = reason
        super().__init__(self.message())

    def message(self) -> str:
        where = [self.file]
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field:
            where.append(f"field '{self.field}'")
        return ": ".join(where) + f": {self.reason}"

    def to_dict(self) -> dict:
        return {"file": self.file, "record": self.record, "field": self.field, "reason": self.reason}


def from_validation_error(file: str | Path, record: str | int, err: ValidationError, prefix: str = "") -> DatasetError:
    """Turn the first pydantic error into a DatasetError naming the dotted field path."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    return DatasetError(file, record, field or None, first.get("msg", "invalid value"))
