"""The dataset registry: each dataset's loader and file layout in one table.

A loader is `iter_<name>(file) -> Iterator[EvalSample | DatasetError]` over one file (or
one folder, for datasets read as a whole). `files` says how a path given by the user
becomes the loader's inputs. A new dataset is one loader module plus one
`register_dataset` call (docs/ARCHITECTURE.md, "Adding a dataset").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mnemoray.registry import Registry

FileLayout = Literal["json_files", "whole_path"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    target: Any  # "module:iter_function" (file -> EvalSample | DatasetError values)
    description: str
    files: FileLayout = "json_files"  # json_files: every *.json under a folder; whole_path: the path as given
    keep_file: Any = None  # "module:function" of a Path -> bool choosing among json_files; None = all


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    return DATASETS.register(spec, replace=replace)


register_dataset(DatasetSpec("locomo", "mnemoray.loaders.locomo:iter_locomo",
                             "LoCoMo conversations with evidence turns (dia_id)"))
register_dataset(DatasetSpec("realmem", "mnemoray.loaders.realmem:iter_realmem",
                             "RealMem *_dialogues_256k.json histories with memory sessions as evidence",
                             keep_file="mnemoray.loaders.realmem:is_history_file"))
register_dataset(DatasetSpec("longmemeval", "mnemoray.loaders.longmemeval:iter_longmemeval",
                             "LongMemEval instances (one history per question)"))
register_dataset(DatasetSpec("perltqa", "mnemoray.loaders.perltqa:iter_perltqa",
                             "PerLTQA profiles, dialogues and QA (a folder read as one unit)", files="whole_path"))
register_dataset(DatasetSpec("rolememo", "mnemoray.loaders.rolememo:iter_rolememo",
                             "a `mnemoray synth rolememo` dataset (its run folder or dataset/)", files="whole_path"))
register_dataset(DatasetSpec("bookmarks", "mnemoray.loaders.bookmarks:iter_bookmarks",
                             "BOOKMARKS stories: one history per work, no questions",
                             keep_file="mnemoray.loaders.bookmarks:is_work_file"))


__all__ = ["DATASETS", "DatasetSpec", "register_dataset"]
