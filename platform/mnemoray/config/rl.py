"""RewardPoolConfig: which reward a GRPO run computes and how the reward actors run it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.llm import EngineConfig


def is_file_reference(reward: str) -> bool:
    """"path/to/file.py" or "path/to/file.py:function" (a user's verl-style compute_score)."""
    return reward.rpartition(":")[0].endswith(".py") or reward.endswith(".py")


class RewardPoolConfig(StrictModel):
    reward: str = Field(..., description="a registered reward (mnemoray rewards list) or 'path/to/file.py:function'")
    num_actors: int = Field(2, ge=1, description="reward actors; a step's items are spread over them")
    in_flight_per_actor: int = Field(8, ge=1, description="concurrent calls inside one actor (async or threads; "
                                     "judge rewards: at most engine.max_in_flight)")
    timeout_s: float = Field(30.0, gt=0, description="per call; a call past it is retried, then scored as failed "
                             "(judge rewards: engine.timeout_s applies)")
    max_retries: int = Field(1, ge=0, description="re-calls after a raise or a timeout (judge rewards: "
                             "engine.max_retries)")
    rate_limit_per_s: float | None = Field(None, gt=0, description="calls started per second per actor (judge APIs)")
    cpus_per_actor: float = Field(0.25, gt=0)
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "SPREAD", description="placement group strategy of the reward actors")
    max_resubmits: int = Field(3, ge=0, description="times a batch is resent after its reward actor died")
    engine: EngineConfig | None = Field(None, description="the judge engine of a reward that calls an LLM")
    judge_retries: int = Field(2, ge=0, description="re-asks after an invalid judge reply")

    @field_validator("reward")
    @classmethod
    def _known(cls, reward: str) -> str:
        from mnemoray.rewards.registry import REWARDS, split_reference

        if is_file_reference(reward):
            path, _ = split_reference(reward)
            if not path.expanduser().is_file():
                raise ValueError(f"reward file {path} does not exist")
            return reward
        if reward == "custom":
            raise ValueError("give a custom reward as 'path/to/file.py:function' (verl's compute_score signature)")
        REWARDS.check(reward)
        return reward

    @model_validator(mode="after")
    def _judge_has_engine(self) -> RewardPoolConfig:
        from mnemoray.rewards.registry import REWARDS

        if is_file_reference(self.reward) or self.engine is not None:
            return self
        spec = REWARDS.spec(self.reward)
        if spec.needs_judge and not spec.engine_optional:
            raise ValueError(f"reward {self.reward!r} calls an LLM judge: set reward.engine")
        return self
