"""All typed configs (pydantic), one module per job family, loaded from YAML with a
`base:` include, `key.sub=value` overrides and every invalid key reported at once.

    base.py     loading, overrides, includes, validation errors
    names.py    field types checked against the registries (engine, framework, dataset)
    ray.py      where Ray runs, worker pools
    llm.py      engine configs
    memory.py   index, memory-model calls, framework blocks, `memory build`
    eval.py     retrieval (one run, the suite), QA, RoleMemo recall, role-play, RealMem judge
    synth.py    `synth rolememo`
    train.py    SFT
    files.py    which model a file under configs/ is; `mnemoray config check`
"""

from mnemoray.config.base import (
    DEFAULT_DATA_ROOT,
    REPO_ROOT,
    ConfigError,
    StrictModel,
    apply_overrides,
    deep_merge,
    load_config,
    read_config_file,
    validate,
)
from mnemoray.config.eval import (
    JudgedEvalBase,
    MemoryEvalBase,
    QAEvalConfig,
    RealMemJudgeConfig,
    RetrievalEvalConfig,
    RetrievalSettings,
    RetrievalSuiteConfig,
    RoleMemoRecallConfig,
    RolePlayEvalConfig,
    SuiteRun,
)
from mnemoray.config.llm import EngineConfig, TinyModel, load_engine_config
from mnemoray.config.memory import (
    BookmarksConfig,
    DualMemConfig,
    HemaConfig,
    IndexConfig,
    LLMCallConfig,
    MemBuilderConfig,
    MemoryBuildConfig,
    MemoryConfig,
    RealMemConfig,
    SummaryConfig,
)
from mnemoray.config.names import DatasetName, EngineName, FrameworkName
from mnemoray.config.ray import RayClusterConfig, RayConfig

__all__ = [
    "DEFAULT_DATA_ROOT", "REPO_ROOT", "BookmarksConfig", "ConfigError", "DatasetName", "DualMemConfig", "EngineConfig",
    "EngineName", "FrameworkName", "HemaConfig", "IndexConfig", "JudgedEvalBase", "LLMCallConfig", "MemBuilderConfig",
    "MemoryBuildConfig", "MemoryConfig", "MemoryEvalBase", "QAEvalConfig", "RayClusterConfig", "RayConfig",
    "RealMemConfig", "RealMemJudgeConfig", "RetrievalEvalConfig", "RetrievalSettings", "RetrievalSuiteConfig",
    "RoleMemoRecallConfig", "RolePlayEvalConfig", "StrictModel", "SuiteRun", "SummaryConfig", "TinyModel",
    "apply_overrides", "deep_merge", "load_config", "load_engine_config", "read_config_file", "validate",
]
