"""Loaders that turn public long-term-memory datasets into mnemoray records.

`iter_dataset(name, path)` yields EvalSample or DatasetError values (errors as values, so
callers choose to stop at the first one or skip and list them). A path may be a file or a
folder of files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mnemoray.loaders.bookmarks import is_work_file, iter_bookmarks
from mnemoray.loaders.errors import DatasetError
from mnemoray.loaders.locomo import iter_locomo
from mnemoray.loaders.longmemeval import iter_longmemeval
from mnemoray.loaders.perltqa import iter_perltqa
from mnemoray.loaders.realmem import iter_realmem
from mnemoray.loaders.rolememo import iter_rolememo
from mnemoray.records import EvalSample

DATASETS: dict[str, Callable[[Path], Iterator[EvalSample | DatasetError]]] = {
    "locomo": iter_locomo,
    "realmem": iter_realmem,
    "longmemeval": iter_longmemeval,
    "perltqa": iter_perltqa,
    "rolememo": iter_rolememo,
    "bookmarks": iter_bookmarks,
}


def dataset_files(name: str, path: Path) -> list[Path]:
    """Files of one dataset under `path` (PerLTQA takes the folder as one unit)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, None, None, "no such file or folder")
    if name in ("perltqa", "rolememo") or path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.json") if p.is_file())
    if name == "realmem":
        files = [p for p in files if "all_persona_topic" not in p.parts]
    if name == "bookmarks":  # one file per work; all_characters.json is read beside each
        files = [p for p in files if is_work_file(p)]
    if not files:
        raise DatasetError(path, None, None, f"no .json files for dataset '{name}' in this folder")
    return files


def iter_dataset(name: str, path: str | Path) -> Iterator[EvalSample | DatasetError]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {sorted(DATASETS)}")
    for file in dataset_files(name, Path(path)):
        yield from DATASETS[name](file)


def load_dataset(name: str, path: str | Path, skip_invalid: bool = False, limit: int | None = None,
                 where: Callable[[EvalSample], bool] | None = None) -> tuple[list[EvalSample], list[DatasetError]]:
    """Samples (the first `limit` that pass `where`), raising the first DatasetError unless `skip_invalid`."""
    samples: list[EvalSample] = []
    errors: list[DatasetError] = []
    for entry in iter_dataset(name, path):
        if isinstance(entry, DatasetError):
            if not skip_invalid:
                raise entry
            errors.append(entry)
        elif where is None or where(entry):
            samples.append(entry)
            if limit and len(samples) >= limit:
                break
    return samples, errors


__all__ = ["DATASETS", "DatasetError", "dataset_files", "iter_dataset", "load_dataset"]
