"""Every per-history evaluation behind one interface, and the one worker that runs them.

An evaluation reads one history (`EvalSample`) with a fresh memory and returns its
per-query rows. `EVALUATIONS` names each one with its settings class and the engines it
needs by role; `HistoryEvaluator` holds what is costly to load (the memory source with its
embedder, the engines, an encoder) and evaluates whole histories of one kind. It is plain
Python: the Ray layer (`mnemoray.distributed.data.history_eval`) runs it as a Ray Data
actor, one history per task, for retrieval, QA and the judged evaluations alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mnemoray.config.memory import MemoryConfig
from mnemoray.memory.source import MemorySource
from mnemoray.records import EvalSample
from mnemoray.registry import Registry
from mnemoray.torch_threads import set_torch_threads


@dataclass(frozen=True)
class EvaluationSpec:
    name: str
    target: Any  # "module:function" (sample, make_memory, tools: EvalTools) -> per-query rows
    settings: Any  # "module:SettingsClass", a dataclass built from the worker's settings dict
    roles: tuple[str, ...] = ()  # engines it needs, by role
    encoder: bool = False  # needs a sentence encoder of its own (similarity of texts)


@dataclass
class EvalTools:
    settings: Any
    engines: dict[str, Any] = field(default_factory=dict)
    encoder: Any = None


EVALUATIONS: Registry[EvaluationSpec] = Registry("evaluation")


def register_evaluation(spec: EvaluationSpec, *, replace: bool = False) -> EvaluationSpec:
    return EVALUATIONS.register(spec, replace=replace)


def run_retrieval(sample: EvalSample, make_memory: Any, tools: EvalTools) -> list[dict[str, Any]]:
    from mnemoray.eval.retrieval import evaluate_sample

    return evaluate_sample(sample, make_memory, tools.settings.ks, tools.settings.overfetch)


def run_qa(sample: EvalSample, make_memory: Any, tools: EvalTools) -> list[dict[str, Any]]:
    from mnemoray.eval.qa import evaluate_qa_sample

    return evaluate_qa_sample(sample, make_memory, tools.engines["answerer"], tools.engines["judge"], tools.settings)


def run_rolememo(sample: EvalSample, make_memory: Any, tools: EvalTools) -> list[dict[str, Any]]:
    from mnemoray.eval.rolememo_recall import evaluate_rolememo_sample

    return evaluate_rolememo_sample(sample, make_memory, tools.encoder, tools.settings)


def run_roleplay(sample: EvalSample, make_memory: Any, tools: EvalTools) -> list[dict[str, Any]]:
    from mnemoray.eval.roleplay import evaluate_roleplay_sample

    return evaluate_roleplay_sample(sample, make_memory, tools.engines["responder"], tools.engines["judge"],
                                    tools.settings)


def run_realmem_judge(sample: EvalSample, make_memory: Any, tools: EvalTools) -> list[dict[str, Any]]:
    from mnemoray.eval.realmem_judge import evaluate_realmem_sample

    return evaluate_realmem_sample(sample, make_memory, tools.engines["answerer"], tools.engines["judge"],
                                   tools.settings)


_HERE = "mnemoray.eval.per_history"
register_evaluation(EvaluationSpec("retrieval", f"{_HERE}:run_retrieval", "mnemoray.eval.retrieval:EvidenceSettings"))
register_evaluation(EvaluationSpec("qa", f"{_HERE}:run_qa", "mnemoray.eval.qa:QASettings", ("answerer", "judge")))
register_evaluation(EvaluationSpec("rolememo", f"{_HERE}:run_rolememo", "mnemoray.eval.rolememo_recall:RecallSettings",
                                   encoder=True))
register_evaluation(EvaluationSpec("roleplay", f"{_HERE}:run_roleplay", "mnemoray.eval.roleplay:RoleplaySettings",
                                   ("responder", "judge")))
register_evaluation(EvaluationSpec("realmem-judge", f"{_HERE}:run_realmem_judge",
                                   "mnemoray.eval.realmem_judge:RealMemJudgeSettings", ("answerer", "judge")))


class HistoryEvaluator:
    """Evaluates whole histories of one kind; called with a batch `{"sample": [EvalSample JSON]}`
    it returns `{"history_id": [...], "rows": [JSON list of per-query rows]}` (the Ray Data form).

    `engines` maps each role the evaluation needs to an engine config dict; roles with equal
    configs share one engine. `similarity` ({"model", "device"}) configures the encoder of
    evaluations that compare texts.
    """

    def __init__(self, kind: str, memory: dict[str, Any], memory_bank: str | None, settings: dict[str, Any],
                 engines: dict[str, dict[str, Any]] | None = None, similarity: dict[str, Any] | None = None,
                 torch_threads: int | None = None, service: dict[str, str] | None = None):
        set_torch_threads(torch_threads)
        from mnemoray.registry import load_target

        spec = EVALUATIONS.spec(kind)
        missing = [role for role in spec.roles if role not in (engines or {})]
        if missing:
            raise ValueError(f"evaluation '{kind}' needs engines for {missing}")
        self.kind = kind
        self.run = load_target(spec.target)
        self.source = MemorySource(MemoryConfig.model_validate(memory), memory_bank, service)
        self.tools = EvalTools(settings=load_target(spec.settings)(**settings),
                               engines=self._engines({r: (engines or {})[r] for r in spec.roles}))
        if spec.encoder:
            from mnemoray.index.embedder import Embedder

            self.tools.encoder = Embedder((similarity or {}).get("model"), (similarity or {}).get("device", "cpu"))

    @staticmethod
    def _engines(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One engine per distinct config (an answerer that is also the judge is built once)."""
        from mnemoray.config.llm import EngineConfig
        from mnemoray.llm.registry import build_engine

        built: list[tuple[dict[str, Any], Any]] = []
        out = {}
        for role, cfg in configs.items():
            same = next((engine for c, engine in built if c == cfg), None)
            out[role] = same or build_engine(EngineConfig.model_validate(cfg))
            if same is None:
                built.append((cfg, out[role]))
        return out

    def evaluate(self, sample: EvalSample) -> list[dict[str, Any]]:
        try:
            return self.run(sample, self.source.factory(sample.history.id), self.tools)
        finally:
            self.source.release()  # a memory service's tenants of this history

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids, rows = [], []
        for raw in batch["sample"]:
            sample = EvalSample.model_validate_json(raw)
            ids.append(sample.history.id)
            rows.append(json.dumps(self.evaluate(sample), ensure_ascii=False))
        return {"history_id": ids, "rows": rows}
