"""Config field types whose allowed values come from the registries (so a new engine,
framework or dataset is accepted everywhere once registered)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from mnemoray.llm.registry import ENGINES
from mnemoray.loaders.registry import DATASETS
from mnemoray.memory.registry import FRAMEWORKS

DatasetName = Annotated[str, AfterValidator(DATASETS.check)]
FrameworkName = Annotated[str, AfterValidator(FRAMEWORKS.check)]
EngineName = Annotated[str, AfterValidator(ENGINES.check)]
