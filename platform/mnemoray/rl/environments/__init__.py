"""GRPO environments: where prompts come from and what their rewards need."""

from mnemoray.rl.environments.prompts import RLPrompt, load_prompts
from mnemoray.rl.environments.registry import ENVIRONMENTS, EnvironmentSpec

__all__ = ["ENVIRONMENTS", "EnvironmentSpec", "RLPrompt", "load_prompts"]
