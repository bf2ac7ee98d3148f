"""Loaders that turn public long-term-memory datasets into mnemoray records.

`iter_dataset(name, path)` yields EvalSample or DatasetError values (errors as values, so
callers choose to stop at the first one or skip and list them). A path may be a file or a
folder of files. Datasets are looked up in the registry (`mnemoray.loaders.registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mnemoray.loaders.errors import DatasetError
from mnemoray.loaders.registry import DATASETS, DatasetSpec, register_dataset
from mnemoray.records import EvalSample
from mnemoray.registry import load_target


def dataset_files(name: str, path: Path) -> list[Path]:
    """The loader's inputs under `path`: the path itself (a file, or a dataset read as a whole
    folder), else its *.json files that the dataset's `keep_file` accepts."""
    spec = DATASETS.spec(name)
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, None, None, "no such file or folder")
    if spec.files == "whole_path" or path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.json") if p.is_file())
    if spec.keep_file is not None:
        keep = load_target(spec.keep_file)
        files = [p for p in files if keep(p)]
    if not files:
        raise DatasetError(path, None, None, f"no .json files for dataset '{name}' in this folder")
    return files


def iter_dataset(name: str, path: str | Path) -> Iterator[EvalSample | DatasetError]:
    load = DATASETS.load(name)  # unknown names: a ValueError listing the registered ones
    for file in dataset_files(name, Path(path)):
        yield from load(file)


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


__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "dataset_files",
    "iter_dataset",
    "load_dataset",
    "register_dataset",
]
