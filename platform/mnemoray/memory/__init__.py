"""Memory frameworks behind one interface (`MemoryFramework`), looked up by name in the
registry (`mnemoray.memory.registry`); importing this package loads no framework."""

from __future__ import annotations

from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.registry import FRAMEWORKS, FrameworkSpec, build_memory, llm_frameworks, register_framework

__all__ = ["FRAMEWORKS", "FrameworkSpec", "MemoryFramework", "build_memory", "llm_frameworks", "register_framework"]
