"""The verl adapter against verl itself (0.9.1): optional lane, skipped where verl is not installed.

Set up with scripts/setup_verl_lane.sh, run with scripts/test_verl_lane.sh. A batch is built by
hand the way verl's trainer hands it to the reward: prompts exported by `export_verl_parquet`
and read by verl's own RLHFDataset + collate_fn, chat-templated and tokenized with the tiny
model's tokenizer, responses tokenized and right-padded, one attention mask over both. Then
verl's own code scores it (the reward-loop worker and NaiveRewardManager that 0.9.1's trainers
use, and the legacy NaiveRewardManager) with the function our config names, and verl's GRPO
`compute_advantage` runs before the ADRPO scaling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

verl = pytest.importorskip("verl")

from hydra import compose, initialize_config_dir  # noqa: E402  (verl's dependency)
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402

from mnemoray.llm.tiny import ensure_tiny  # noqa: E402
from mnemoray.rewards.registry import REWARDS  # noqa: E402
from mnemoray.rewards.scoring import call_reward  # noqa: E402
from mnemoray.rl.environments.prompts import RLPrompt  # noqa: E402
from mnemoray.rl.verl import apply_attribution, export_verl_parquet, scale_advantages, with_attribution  # noqa: E402
from repo_paths import REPO  # noqa: E402

pytestmark = pytest.mark.verl_lane

CONFIG_DIR = REPO / "configs" / "verl"
CONFIG_NAME = "grpo_membuilder"
VERL_CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"
LENGTH_PENALTY_KEYS = ["score", "task_reward", "length_penalty", "memory_type", "format_ok", "tokens", "rho",
                       "attribution_counts", "attribution_weight", "attribution_invalid", "reward_failed",
                       "reward_error"]

# (prompt extra_info, ground truth, response): core and episodic stores, one row whose reward fails
ROWS = [
    ({"memory_type": "core", "task_reward": 0.8}, None, "likes tea and books"),
    ({"memory_type": "episodic", "task_reward": 1.0}, "met Alice in Paris on monday", "met Alice in Paris"),
    ({"memory_type": "episodic", "task_reward": 0.5}, "went home", "the user went home after the long trip"),
    ({"memory_type": "semantic"}, "a fact", "a fact about coffee"),  # no task reward -> counted failure
]


def compose_config(overrides: list[str] | None = None, name: str = CONFIG_NAME, config_dir: Path = CONFIG_DIR):
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(name, overrides=overrides or [])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_tiny(tmp_path_factory.mktemp("tiny"), arch="qwen2", seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from verl.utils import hf_tokenizer

    return hf_tokenizer(str(tiny))


@pytest.fixture(scope="module")
def config(tiny):
    return compose_config([f"actor_rollout_ref.model.path={tiny}", "reward.num_workers=1"])


def read_with_verl_dataset(parquet: Path, tokenizer, cache: Path) -> dict:
    """The rows as verl's RLHFDataset + collate_fn turn them into a batch dict."""
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    data_config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512, "filter_overlong_prompts": False,
                                    "return_raw_chat": True, "cache_dir": str(cache), "truncation": "error"})
    dataset = RLHFDataset(str(parquet), tokenizer, data_config)
    return collate_fn([dataset[i] for i in range(len(dataset))])


def build_batch(tokenizer, rows: list[dict], responses: list[str], response_len: int = 48) -> DataProto:
    """prompts (left-padded) | responses (right-padded, ending in EOS) with one attention mask, plus every
    non-tensor field of the dataset rows."""
    prompt_ids = []
    for chat in rows["raw_prompt"]:
        ids = tokenizer.apply_chat_template(list(chat), add_generation_prompt=True, tokenize=True)
        prompt_ids.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))  # transformers 5: a BatchEncoding
    response_ids = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] for text in responses]
    assert max(map(len, response_ids)) <= response_len
    prompt_len = max(map(len, prompt_ids))
    pad = tokenizer.pad_token_id
    prompts = torch.tensor([[pad] * (prompt_len - len(p)) + list(p) for p in prompt_ids])
    prompt_mask = torch.tensor([[0] * (prompt_len - len(p)) + [1] * len(p) for p in prompt_ids])
    resp = torch.tensor([list(r) + [pad] * (response_len - len(r)) for r in response_ids])
    resp_mask = torch.tensor([[1] * len(r) + [0] * (response_len - len(r)) for r in response_ids])
    attention_mask = torch.cat([prompt_mask, resp_mask], dim=1)
    tensors = {
        "prompts": prompts,
        "responses": resp,
        "input_ids": torch.cat([prompts, resp], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": resp_mask,
    }
    non_tensors = {k: v for k, v in rows.items() if not isinstance(v, torch.Tensor)}
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


@pytest.fixture(scope="module")
def batch(tokenizer, tmp_path_factory) -> DataProto:
    folder = tmp_path_factory.mktemp("verl-data")
    prompts = [RLPrompt(f"session-{i}", ({"role": "user", "content": f"write the {info['memory_type']} memory"},),
                        "membuilder", truth, info) for i, (info, truth, _) in enumerate(ROWS)]
    parquet = export_verl_parquet(prompts, folder / "train.parquet")
    rows = read_with_verl_dataset(parquet, tokenizer, folder / "cache")
    return build_batch(tokenizer, rows, [response for _, _, response in ROWS])


def decoded_responses(data: DataProto, tokenizer) -> list[str]:
    lengths = data.batch["response_mask"].sum(-1).tolist()
    return [tokenizer.decode(data.batch["responses"][i, :n], skip_special_tokens=True) for i, n in enumerate(lengths)]


def mnemoray_scores(data: DataProto, tokenizer, reward: str = "length-penalty") -> list[float]:
    """mnemoray's own reward on the decoded responses (what verl's score must equal)."""
    fn = REWARDS.load(reward)
    out = []
    for i, text in enumerate(decoded_responses(data, tokenizer)):
        info = {k: v for k, v in data.non_tensor_batch["extra_info"][i].items() if v is not None}
        truth = data.non_tensor_batch["reward_model"][i]["ground_truth"]
        out.append(call_reward(fn, "membuilder", text, truth, info).score)
    return out


def assert_scores_at_last_token(reward_tensor: torch.Tensor, data: DataProto, expected: list[float]) -> None:
    lengths = data.batch["response_mask"].sum(-1).tolist()
    assert reward_tensor.shape == data.batch["responses"].shape
    for i, n in enumerate(lengths):
        assert reward_tensor[i, n - 1].item() == pytest.approx(expected[i], abs=1e-6)
        others = torch.cat([reward_tensor[i, : n - 1], reward_tensor[i, n:]])
        assert torch.count_nonzero(others) == 0


# --- the config ------------------------------------------------------------------------------


def leaf_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [key for k, v in node.items() for key in leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))]


def has_key(cfg, dotted: str) -> bool:
    """Whether the key exists (its value may be ??? / MISSING, which OmegaConf.select hides)."""
    node = cfg
    for part in dotted.split("."):
        if not OmegaConf.is_dict(node) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def test_config_keys_exist_in_verls_ppo_trainer(config):
    ours = yaml.safe_load((CONFIG_DIR / f"{CONFIG_NAME}.yaml").read_text())
    ours.pop("hydra"), ours.pop("defaults")
    base = compose_config(name="ppo_trainer", config_dir=VERL_CONFIG_DIR)
    missing = [key for key in leaf_keys(ours) if not has_key(base, key)]
    assert missing == ["reward.custom_reward_function.reward_kwargs.reward",
                       "reward.custom_reward_function.reward_kwargs.attribution_key"]
    for key in leaf_keys(ours):
        if key != "actor_rollout_ref.model.path":
            assert OmegaConf.select(config, key) == OmegaConf.select(OmegaConf.create(ours), key), key
    assert config.algorithm.adv_estimator == "grpo" and config.actor_rollout_ref.rollout.n == 8


def test_model_path_is_required(monkeypatch):
    from omegaconf.errors import InterpolationResolutionError

    monkeypatch.delenv("MNEMORAY_VERL_MODEL", raising=False)
    with pytest.raises(InterpolationResolutionError, match="MNEMORAY_VERL_MODEL"):
        OmegaConf.to_container(compose_config(), resolve=True)
    monkeypatch.setenv("MNEMORAY_VERL_MODEL", "/models/m")
    assert compose_config().actor_rollout_ref.model.path == "/models/m"


def test_config_passes_verls_validation(config):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    assert not need_critic(config) and not need_reference_policy(config)
    validate_config(config=config, use_reference_policy=False, use_critic=False)


def test_verl_loads_our_function_with_reward_kwargs(config):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(config)
    out = fn(data_source="membuilder", solution_str="abcd", ground_truth=None,
             extra_info={"memory_type": "core", "task_reward": 0.5})
    assert list(out) == LENGTH_PENALTY_KEYS and out["score"] == 0.5  # reward_kwargs chose length-penalty


def test_reward_kwargs_from_the_command_line(tiny):
    """A list from a Hydra override arrives as a ListConfig; a new key needs Hydra's '+'."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = compose_config([f"actor_rollout_ref.model.path={tiny}", "reward.custom_reward_function.reward_kwargs.reward"
                          "=keyword-count", "+reward.custom_reward_function.reward_kwargs.extra_keys=[chars,absent]"])
    out = get_custom_reward_fn(cfg)(data_source="d", solution_str="eex", ground_truth="e", extra_info={})
    assert out["score"] == pytest.approx(2 / 3) and (out["chars"], out["absent"]) == (3, None)


# --- scoring with verl's reward managers ------------------------------------------------------


def test_exported_rows_reach_the_batch(batch):
    extra = batch.non_tensor_batch["extra_info"]
    assert [e["mnemoray_id"] for e in extra] == [f"session-{i}" for i in range(len(ROWS))]
    assert list(batch.non_tensor_batch["id"]) == [f"session-{i}" for i in range(len(ROWS))]
    assert batch.non_tensor_batch["reward_model"][1] == {"style": "rule", "ground_truth": ROWS[1][1]}
    assert list(batch.non_tensor_batch["data_source"]) == ["membuilder"] * len(ROWS)


def test_reward_loop_worker_scores_the_batch(config, batch, tokenizer):
    """0.9.1's trainers score through RewardLoopWorker -> reward-loop NaiveRewardManager; the
    manager stacks reward_extra_info with the first sample's keys (RewardLoopManager.compute_rm_score)."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    worker = RewardLoopWorker(config)
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(batch))
    scores = [out["reward_score"] for out in outputs]
    assert scores == pytest.approx(mnemoray_scores(batch, tokenizer))
    assert scores[3] == 0.0 and scores[0] == pytest.approx(0.8)

    rm_scores = type(worker.reward_manager).assemble_rm_scores(batch, scores)
    assert_scores_at_last_token(rm_scores, batch, scores)
    infos = [out["reward_extra_info"] for out in outputs]
    keys = list(infos[0])
    stacked = {key: np.array([info[key] for info in infos]) for key in keys}  # KeyError if keys differed
    assert keys == LENGTH_PENALTY_KEYS
    assert stacked["reward_failed"].tolist() == [0, 0, 0, 1]
    assert stacked["attribution_weight"].tolist() == [1.0] * 4
    assert "no task reward" in stacked["reward_error"][3]


def test_legacy_naive_reward_manager(config, batch, tokenizer):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import NaiveRewardManager

    manager = NaiveRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=get_custom_reward_fn(config))
    result = manager(batch, return_dict=True)
    expected = mnemoray_scores(batch, tokenizer)
    assert_scores_at_last_token(result["reward_tensor"], batch, expected)
    extra = result["reward_extra_info"]
    assert list(extra) == LENGTH_PENALTY_KEYS
    assert extra["score"] == pytest.approx(expected)
    assert extra["attribution_weight"] == [1.0] * 4 and extra["reward_failed"] == [0, 0, 0, 1]
    assert extra["memory_type"] == ["core", "episodic", "episodic", None]


# --- GRPO advantages, then ADRPO scaling -------------------------------------------------------


REWARD_FILE = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    # toy QA reward: share of 'e'; each 'e' is an episodic item that served, each 's' a semantic one
    chars = [c for c in solution_str if not c.isspace()]
    return {"score": sum(c == "e" for c in chars) / max(len(chars), 1),
            "attribution_counts": {"episodic": solution_str.count("e"), "semantic": solution_str.count("s")}}
"""


def test_grpo_advantages_then_attribution(tokenizer, tmp_path: Path, tiny):
    from verl.trainer.ppo.ray_trainer import compute_advantage
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import NaiveRewardManager

    reward_file = tmp_path / "served.py"
    reward_file.write_text(REWARD_FILE)
    cfg = compose_config([f"actor_rollout_ref.model.path={tiny}", "actor_rollout_ref.rollout.n=4",
                          f"reward.custom_reward_function.reward_kwargs.reward={reward_file}:compute_score"])

    # two prompts x four responses (GRPO groups by uid)
    chats = [[{"role": "user", "content": "remember this"}]] * 4 + [[{"role": "user", "content": "and this"}]] * 4
    responses = ["eee", "ss e", "tea time", "seen", "sss", "e e", "cat", "eel"]
    rows = {"raw_prompt": objects(chats), "data_source": objects(["membuilder"] * 8),
            "reward_model": objects([{"style": "rule", "ground_truth": None} for _ in range(8)]),
            "extra_info": objects([{"index": i // 4} for i in range(8)]), "uid": objects(["p0"] * 4 + ["p1"] * 4)}
    data = build_batch(tokenizer, rows, responses)

    scored = NaiveRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=get_custom_reward_fn(cfg))(
        data, return_dict=True)
    data.batch["token_level_rewards"] = scored["reward_tensor"]
    data.non_tensor_batch.update({k: np.array(v) for k, v in scored["reward_extra_info"].items()})  # as fit() does

    plain = compute_advantage(_copy(data), adv_estimator="grpo",
                              num_repeat=cfg.actor_rollout_ref.rollout.n, config=cfg.algorithm)
    seen = []
    weighted = with_attribution(compute_advantage, alpha=4.0, on_attribution=seen.append)(
        _copy(data), adv_estimator="grpo", num_repeat=cfg.actor_rollout_ref.rollout.n, config=cfg.algorithm)

    counts = [json.loads(c) for c in data.non_tensor_batch["attribution_counts"]]
    totals = {k: sum(c.get(k, 0) for c in counts) for k in ("episodic", "semantic")}
    assert totals["episodic"] > totals["semantic"] and seen[0].dominant == "episodic"
    expected_weights = [4.0 if c.get("episodic", 0) > 0 else 1.0 for c in counts]
    assert seen[0].weights == expected_weights
    assert weighted.non_tensor_batch["attribution_weight"].tolist() == expected_weights
    factor = torch.tensor(expected_weights).unsqueeze(-1)
    assert torch.allclose(weighted.batch["advantages"], plain.batch["advantages"] * factor)
    assert torch.count_nonzero(plain.batch["advantages"]) > 0
    # padded positions stay zero
    assert torch.count_nonzero(weighted.batch["advantages"] * (1 - data.batch["response_mask"])) == 0


def objects(values: list) -> np.ndarray:
    """A 1-d object array (np.array would turn a list of lists into a 2-d one)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _copy(data: DataProto) -> DataProto:
    return DataProto.from_dict(tensors={k: v.clone() for k, v in data.batch.items()},
                               non_tensors={k: v.copy() for k, v in data.non_tensor_batch.items()})


def test_scale_advantages_on_a_real_dataproto():
    adv = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 0.5], [0.0, 0.0, 3.0]])
    data = DataProto.from_dict(tensors={"advantages": adv.clone(), "response_mask": torch.ones(3, 3)},
                               non_tensors={"attribution_weight": np.array([4.0, 1.0, 0.5], dtype=object)})
    scale_advantages(data)
    assert torch.equal(data.batch["advantages"], adv * torch.tensor([[4.0], [1.0], [0.5]]))
    data.check_consistency()
    with pytest.raises(ValueError, match=r"\['attribution_weight'\] has shape \(2,\)"):
        bad = DataProto.from_dict(tensors={"advantages": adv.clone()})
        bad.non_tensor_batch["attribution_weight"] = np.ones(2)
        scale_advantages(bad)
    # apply_attribution on a DataProto: counts as verl stacks them, types from each prompt's extra_info
    counts = np.array(['{"episodic": 2}', '{"semantic": 1}', "{}"])
    infos = objects([{"memory_type": "episodic"}, {"memory_type": "semantic"}, {"memory_type": "episodic"}])
    data = DataProto.from_dict(tensors={"advantages": adv.clone()},
                               non_tensors={"attribution_counts": counts, "extra_info": infos})
    assert apply_attribution(data).weights == [4.0, 1.0, 4.0]


def docs_launcher_source() -> str:
    text = (REPO / "docs" / "verl.md").read_text()
    start = text.index("```python\n# verl_adrpo_main.py") + len("```python\n")
    return text[start: text.index("```", start)]


def test_docs_launcher_patches_the_legacy_trainer():
    """docs/verl.md's launcher: its task runner subclass builds and its patch wraps compute_advantage
    in ray_trainer, which RayPPOTrainer.fit calls before the actor update."""
    import verl.trainer.ppo.ray_trainer as ray_trainer
    from verl.trainer.main_ppo_v0 import TaskRunner

    source = Path(ray_trainer.__file__).read_text()
    fit = source[source.index("    def fit(self"):]
    assert fit.index("batch.non_tensor_batch.update(") < fit.index("batch = compute_advantage(")
    assert fit.index("batch = compute_advantage(") < fit.index("actor_output = self._update_actor(batch)")

    namespace: dict = {"__name__": "verl_adrpo_main"}
    exec(compile(docs_launcher_source(), "docs/verl.md", "exec"), namespace)  # defines, does not run main()
    assert issubclass(namespace["_AttributedTaskRunner"], TaskRunner.__ray_actor_class__)
    assert hasattr(namespace["AttributedTaskRunner"], "remote")
    original = ray_trainer.compute_advantage
    try:
        namespace["install_attribution"]()
        namespace["install_attribution"]()  # idempotent: wrapped once
        patched = ray_trainer.compute_advantage
        assert patched.__mnemoray_attribution__ and patched.__wrapped__ is original
    finally:
        ray_trainer.compute_advantage = original
