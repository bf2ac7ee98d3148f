"""The verl adapter without verl: parquet export read back by `load_prompts`, the custom reward
function (registered, file and failing rewards; stable keys), batch attribution weights and
row-wise advantage scaling on a DataProto-shaped stand-in."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mnemoray.rewards import toy
from mnemoray.rl.environments import load_prompts
from mnemoray.rl.environments.prompts import RLPrompt
from mnemoray.rl.verl import (
    RewardConfigError,
    apply_attribution,
    attribution_weights_for_batch,
    compute_score,
    decode_ground_truth,
    export_verl_parquet,
    scale_advantages,
    with_attribution,
)
from mnemoray.rl.verl.reward import EXTRA_KEYS
from repo_paths import REPO

STABLE_KEYS = ["score", "attribution_counts", "attribution_weight", "attribution_invalid", "reward_failed",
               "reward_error"]


def prompt(pid: str, truth=None, **extra) -> RLPrompt:
    return RLPrompt(pid, ({"role": "system", "content": "be brief"}, {"role": "user", "content": f"q {pid}"}),
                    "membuilder", truth, extra)


# --- parquet export -------------------------------------------------------------------------


def test_export_round_trips_through_load_prompts(tmp_path: Path):
    prompts = [
        prompt("s1", "expert text", memory_type="core", task_reward=0.5),
        prompt("s2", {"answer": [1, 2]}, memory_type="episodic"),
        prompt("s3", None, memory_type="episodic", index=41),
        prompt("s4", 7, memory_type="semantic", task_reward=1.0),
    ]
    path = export_verl_parquet(prompts, tmp_path / "out" / "train.parquet")
    assert path == tmp_path / "out" / "train.parquet"

    loaded, errors = load_prompts(path)
    assert errors == []
    assert [p.id for p in loaded] == ["s1", "s2", "s3", "s4"]
    for original, back in zip(prompts, loaded):
        assert back.messages == original.messages and back.data_source == "membuilder"
        assert back.extra_info["mnemoray_id"] == original.id
        assert decode_ground_truth(back.ground_truth, back.extra_info) == original.ground_truth
        for key, value in original.extra_info.items():
            assert back.extra_info[key] == value
    # strings stay strings; other ground truths are JSON text, flagged per row
    assert loaded[0].ground_truth == "expert text" and not loaded[0].extra_info["mnemoray_ground_truth_json"]
    assert loaded[1].ground_truth == '{"answer": [1, 2]}' and loaded[1].extra_info["mnemoray_ground_truth_json"]
    assert loaded[3].ground_truth == "7"
    # index: the row number unless the prompt has its own; a key other rows lack reads back as None
    assert [p.extra_info["index"] for p in loaded] == [0, 1, 41, 3]
    assert loaded[1].extra_info["task_reward"] is None


def test_export_has_verls_rl_layout(tmp_path: Path):
    path = export_verl_parquet([prompt("a", "e"), prompt("b", "x")], tmp_path / "t.parquet", ability="qa")
    rows = pq.read_table(path).to_pylist()
    assert set(rows[0]) == {"id", "data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert rows[1]["prompt"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q b"}]
    assert rows[1]["reward_model"] == {"style": "rule", "ground_truth": "x"}
    assert rows[1]["ability"] == "qa" and rows[1]["data_source"] == "membuilder"
    assert rows[1]["extra_info"]["index"] == 1 and rows[1]["extra_info"]["mnemoray_id"] == "b"


def test_jsonl_prompts_export_unchanged(tmp_path: Path):
    source = tmp_path / "p.jsonl"
    source.write_text(json.dumps({"id": "q1", "prompt": "hi", "ground_truth": "e", "extra_info": {"k": 1}}) + "\n")
    first, _ = load_prompts(source)
    second, _ = load_prompts(export_verl_parquet(first, tmp_path / "p.parquet"))
    assert (second[0].id, second[0].messages, second[0].ground_truth) == ("q1", first[0].messages, "e")


@pytest.mark.parametrize("prompts,match", [
    ([], "no prompts"),
    ([prompt("a"), prompt("a")], "duplicate prompt id 'a'"),
    ([prompt("odd", {1, 2})], "prompt 'odd': ground truth of type set"),
    ([prompt("x", "e", k=1), prompt("y", "e", k="one")], "extra_info\\['k'\\] has values of different types"),
    ([prompt("x", "e", c={}), prompt("y", "e")], "extra_info\\['c'\\] is an empty mapping"),
])
def test_export_errors_name_the_problem(tmp_path: Path, prompts, match):
    with pytest.raises(ValueError, match=match):
        export_verl_parquet(prompts, tmp_path / "bad.parquet")


# --- compute_score --------------------------------------------------------------------------


def test_registered_reward_matches_mnemoray_and_has_stable_keys():
    out = compute_score("toy", "eee xy", "e")
    assert out["score"] == toy.compute_score("toy", "eee xy", "e")["score"] == pytest.approx(0.6)
    assert out["chars"] == 5
    assert list(out) == ["score", "chars", *STABLE_KEYS[1:]]
    assert (out["attribution_counts"], out["attribution_weight"], out["reward_failed"], out["reward_error"]) == (
        "{}", 1.0, 0, "")


def test_public_path_is_the_same_function_and_loads_from_its_file():
    from mnemoray.rl import verl_reward

    assert verl_reward.compute_score is compute_score
    # verl's load_module for a plain file path: the file executed under another module name
    spec = importlib.util.spec_from_file_location("custom_module_x", Path(verl_reward.__file__))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.compute_score is compute_score


def test_same_keys_for_every_sample_success_or_failure():
    """verl stacks reward_extra_info with the first sample's keys: all samples must have them."""
    infos = [
        {"memory_type": "core", "task_reward": 0.8},  # core rule: tokens
        {"memory_type": "episodic", "task_reward": 1.0, "expert_length": 4},  # ratio rule: rho
        {"memory_type": "episodic"},  # no task reward -> failure
        {"memory_type": "episodic", "task_reward": 1.0, "format_ok": False},
    ]
    outs = [compute_score("mb", "abcd", None, info, reward="length-penalty") for info in infos]
    keys = [list(o) for o in outs]
    assert all(k == keys[0] for k in keys)
    assert keys[0] == ["score", *EXTRA_KEYS["length-penalty"], *STABLE_KEYS[1:]]
    assert [o["reward_failed"] for o in outs] == [0, 0, 1, 0]
    assert outs[0]["score"] == pytest.approx(0.8) and outs[0]["tokens"] == 1.0 and outs[0]["rho"] is None
    assert outs[1]["rho"] == 1.0 and outs[1]["tokens"] is None
    assert outs[2]["score"] == 0.0 and "no task reward" in outs[2]["reward_error"]
    assert outs[3]["score"] == 0.0 and outs[3]["format_ok"] is False and outs[3]["reward_failed"] == 0


def write_reward_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_reward.py"
    path.write_text(body)
    return path


def test_file_reward_with_chosen_extra_keys(tmp_path: Path):
    path = write_reward_file(tmp_path, (
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': len(solution_str) / 10, 'length': len(solution_str), 'tags': ['a'],\n"
        "            'attribution_counts': {'episodic': 2}}\n"))
    plain = compute_score("d", "abcd", None, reward=f"{path}:compute_score")
    assert plain["score"] == pytest.approx(0.4) and "length" not in plain  # file rewards: no extras by default
    assert plain["attribution_counts"] == '{"episodic": 2}'  # counts from the reward's extras
    chosen = compute_score("d", "abcd", None, reward=str(path), extra_keys=["length", "tags", "absent"])
    assert (chosen["length"], chosen["tags"], chosen["absent"]) == (4, '["a"]', None)


@pytest.mark.parametrize("body,reason", [
    ("def compute_score(*a, **k):\n    raise RuntimeError('judge down')\n", "raised RuntimeError: judge down"),
    ("def compute_score(*a, **k):\n    return float('nan')\n", "score is not finite"),
    ("def compute_score(*a, **k):\n    return {'acc': 1}\n", "without 'score'"),
    ("def compute_score(*a, **k):\n    return 'high'\n", "score is not a number"),
])
def test_failing_reward_is_a_counted_zero_never_an_exception(tmp_path: Path, body, reason):
    path = write_reward_file(tmp_path, body)
    out = compute_score("d", "resp", "gt", {"k": 1}, reward=f"{path}:compute_score")
    assert out["score"] == 0.0 and out["reward_failed"] == 1 and reason in out["reward_error"]
    assert list(out) == STABLE_KEYS


@pytest.mark.parametrize("reward,match", [
    ("no-such-reward", "unknown reward 'no-such-reward'"),
    ("persona-judge", "LLM judge"),
    ("custom", "needs the file itself"),
    ("/nowhere/reward.py:compute_score", "no such file"),
    ("", "registered name"),
])
def test_configuration_mistakes_raise(reward, match):
    with pytest.raises(RewardConfigError, match=match):
        compute_score("d", "x", "e", reward=reward)


def test_kwargs_verl_adds_are_accepted_and_typos_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="mnemoray.rl.verl.reward"):
        out = compute_score("d", "eee", "e", reward_router_address=None, reward_model_tokenizer=None)
        compute_score("d", "eee", "e", rewrad="length-penalty")
    assert out["score"] == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "mnemoray verl reward: ignoring unknown keyword 'rewrad' (check reward_kwargs for a typo)"]


def test_json_ground_truth_and_parquet_nones(tmp_path: Path):
    path = write_reward_file(tmp_path, (
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    assert ground_truth == {'a': [1]}, ground_truth\n"
        "    assert 'task_reward' not in extra_info, extra_info\n"
        "    return 1.0\n"))
    info = {"mnemoray_ground_truth_json": True, "task_reward": None, "index": 0}
    out = compute_score("d", "x", '{"a": [1]}', info, reward=str(path))
    assert out["score"] == 1.0 and out["reward_failed"] == 0
    assert info["task_reward"] is None  # the caller's dict is not changed


def test_attribution_inputs_from_extra_info():
    out = compute_score("d", "eee", "e", {"attribution_counts": {"episodic": 3, "core": None},
                                          "attribution_weight": 4})
    assert (out["attribution_counts"], out["attribution_weight"], out["attribution_invalid"]) == (
        '{"episodic": 3}', 4.0, 0)
    bad = compute_score("d", "eee", "e", {"attribution_counts": {"episodic": -1}, "attribution_weight": "x"})
    assert bad["score"] == 1.0 and bad["reward_failed"] == 0  # a bad count does not zero the score
    assert (bad["attribution_counts"], bad["attribution_weight"], bad["attribution_invalid"]) == ("{}", 1.0, 1)
    assert "bad attribution_counts" in bad["reward_error"] and "attribution_weight" in bad["reward_error"]
    assert "attribution_counts" not in compute_score("d", "e", "e", attribution_key=None)


# --- batch attribution weights -------------------------------------------------------------


COUNTS = [{"episodic": 2, "core": 5}, {"semantic": 1}, {"episodic": 1}, {}]


@pytest.mark.parametrize("boost_core,expected,dominant", [
    (False, [4.0, 1.0, 4.0, 1.0], "episodic"),  # totals: core 5 (never boosted), episodic 3, semantic 1
    (True, [4.0, 1.0, 1.0, 1.0], "core"),
])
def test_batch_weights_by_hand(boost_core, expected, dominant):
    result = attribution_weights_for_batch(COUNTS, alpha=4.0, boost_core=boost_core)
    assert result.weights == expected and result.dominant == dominant
    assert result.totals == {"episodic": 3, "core": 5, "semantic": 1}


def test_batch_weights_accept_every_form_verl_hands_over():
    forms = np.empty(4, dtype=object)
    forms[:] = [json.dumps(COUNTS[0]), {"attribution_counts": COUNTS[1], "index": 1},
                {"attribution_counts": json.dumps(COUNTS[2])}, None]
    assert attribution_weights_for_batch(forms, alpha=2.5).weights == [2.5, 1.0, 2.5, 1.0]
    # types decide membership when given: sample 3 wrote episodic memory although it counted nothing
    typed = attribution_weights_for_batch(COUNTS, sample_types=["episodic", "semantic", "core", "episodic"])
    assert typed.weights == [4.0, 1.0, 1.0, 4.0]
    tie = attribution_weights_for_batch([{"episodic": 1}, {"semantic": 1}])
    assert tie.weights == [1.0, 1.0] and tie.dominant is None
    with pytest.raises(ValueError, match="sample 1: count of 'x' must be an integer"):
        attribution_weights_for_batch([{}, {"x": 1.5}])
    with pytest.raises(ValueError, match="sample 0: expected counts"):
        attribution_weights_for_batch([3])


# --- scale_advantages ----------------------------------------------------------------------


def batch(advantages, **non_tensors) -> SimpleNamespace:
    """DataProto's duck-typed surface: .batch (mapping of tensors), .non_tensor_batch (numpy arrays)."""
    return SimpleNamespace(batch={"advantages": advantages}, non_tensor_batch=dict(non_tensors))


def test_scale_advantages_row_wise():
    adv = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 0.5], [3.0, 0.0, 0.0]])
    weights = np.empty(3, dtype=object)
    weights[:] = [4.0, 1, 0.0]
    data = batch(adv.clone(), attribution_weight=weights)
    assert scale_advantages(data) is data
    assert torch.equal(data.batch["advantages"], torch.tensor([[4.0, -8.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))
    half = batch(adv.to(torch.bfloat16), w=np.array([2.0, 2.0, 2.0]))
    scale_advantages(half, weights_key="w")
    assert half.batch["advantages"].dtype == torch.bfloat16
    assert torch.equal(half.batch["advantages"].float(), adv * 2)


@pytest.mark.parametrize("adv,weights,error,match", [
    (torch.zeros(2, 3), np.ones(3), ValueError, r"\['attribution_weight'\] has shape \(3,\), expected \(2,\)"),
    (torch.zeros(2, 3), np.ones((2, 1)), ValueError, r"\['attribution_weight'\] has shape \(2, 1\)"),
    (torch.zeros(2), np.ones(2), ValueError, r"\['advantages'\] must be \[batch, response_len\]"),
    (torch.zeros(2, 3), np.array([1.0, -1.0]), ValueError, r"negative or not finite at rows \[1\]"),
    (torch.zeros(2, 3), np.array([math.nan, 1.0]), ValueError, r"negative or not finite at rows \[0\]"),
    (torch.zeros(2, 3), np.array(["a", "b"]), ValueError, r"\['attribution_weight'\] must hold numbers"),
])
def test_scale_advantages_rejects_bad_weights(adv, weights, error, match):
    with pytest.raises(error, match=match):
        scale_advantages(batch(adv, attribution_weight=weights))


def test_scale_advantages_missing_keys_are_named():
    with pytest.raises(KeyError, match="no 'attribution_weight'"):
        scale_advantages(batch(torch.zeros(2, 3), other=np.ones(2)))
    with pytest.raises(KeyError, match="no 'advantages'"):
        scale_advantages(SimpleNamespace(batch={}, non_tensor_batch={"attribution_weight": np.ones(2)}))


def verl_stack(outputs: list[dict]) -> dict[str, np.ndarray]:
    """What verl's reward loop does with per-sample dicts: one array per key of the first."""
    return {key: np.array([out[key] for out in outputs]) for key in outputs[0]}


def test_apply_attribution_on_reward_outputs():
    infos = [{"memory_type": "episodic", "attribution_counts": {"episodic": 2}},
             {"memory_type": "semantic", "attribution_counts": {"semantic": 1}},
             {"memory_type": "episodic"},
             {"memory_type": "core", "attribution_counts": {"core": 9}}]
    outs = [compute_score("mb", "eee", "e", info) for info in infos]
    extra_info = np.empty(4, dtype=object)
    extra_info[:] = infos
    data = batch(torch.ones(4, 2), extra_info=extra_info, **verl_stack(outs))
    attribution = apply_attribution(data, alpha=4.0)
    # types from the prompts' extra_info: both episodic samples are boosted, core never is
    assert attribution.dominant == "episodic" and attribution.weights == [4.0, 1.0, 4.0, 1.0]
    assert data.non_tensor_batch["attribution_weight"].tolist() == [4.0, 1.0, 4.0, 1.0]
    assert data.batch["advantages"][:, 0].tolist() == [4.0, 1.0, 4.0, 1.0]
    with pytest.raises(KeyError, match="no 'attribution_counts'"):
        apply_attribution(batch(torch.ones(1, 1), x=np.ones(1)))


def test_with_attribution_wraps_compute_advantage():
    seen = []

    def compute_advantage(data, adv_estimator, num_repeat=1):
        data.batch["advantages"] = torch.full((2, 3), float(num_repeat))
        return data

    wrapped = with_attribution(compute_advantage, alpha=3.0, on_attribution=seen.append)
    assert wrapped.__name__ == "compute_advantage"
    data = wrapped(batch(None, attribution_counts=np.array(['{"episodic": 1}', "{}"])), "grpo", num_repeat=2)
    assert data.batch["advantages"].tolist() == [[6.0] * 3, [2.0] * 3]
    assert seen[0].dominant == "episodic"


def test_shipped_verl_config_names_the_adapter():
    import yaml

    config = yaml.safe_load((REPO / "configs" / "verl" / "grpo_membuilder.yaml").read_text())
    fn = config["reward"]["custom_reward_function"]
    assert (fn["path"], fn["name"]) == ("pkg://mnemoray.rl.verl_reward", "compute_score")
    assert fn["reward_kwargs"]["reward"] == "length-penalty"
    assert config["algorithm"]["adv_estimator"] == "grpo" and config["actor_rollout_ref"]["rollout"]["n"] == 8


# --- membuilder-qa (dense QA in the loop) through the adapter ---------------------------------

def dense_qa_prompt(pid: str, memory_type: str = "episodic", **more) -> RLPrompt:
    """A membuilder-qa prompt as `train grpo-data --qa-engine ... --out x.parquet` writes it
    (nested inputs as JSON text): a dog in the semantic store before the session, 3 questions."""
    from mnemoray.memory.ops import Provenance, new_item
    from mnemoray.rewards.dense_qa import JSON_KEYS

    dog = new_item("semantic", "Biscuit - Sam's beagle", Provenance("h1:S1"))
    empty = {"operations": []}
    info = {"memory_type": memory_type, "session_id": "h1:S2", "session_date": "2023-05-02",
            "state_before": {"core": "", "stores": {"semantic": [dog.model_dump(mode="json")]}},
            "expert_ops": {"core": empty, "episodic": empty, "semantic": empty, "procedural": empty},
            "handles": {"semantic": {"S1": dog.id}}, "expert_length": len(MOVED),
            "qa": [{"id": "q1", "type": "single-session", "question": "Where did Sam move?", "answer": "Lisbon"},
                   {"id": "q2", "type": "single-session", "question": "What is Sam's dog called?",
                    "answer": "Biscuit"},
                   {"id": "q3", "type": "temporal", "question": "What car does Sam drive?",
                    "answer": "a red Toyota"}], **more}
    return prompt(pid, MOVED, **{k: json.dumps(v) if k in JSON_KEYS else v for k, v in info.items()})


MOVED = json.dumps({"operations": [{"action": "ADD", "ids": [], "text": "2023-05-02: Sam moved to Lisbon in April"}]},
                   sort_keys=True)


def test_membuilder_qa_reward_through_verl_matches_the_loops_reward(tmp_path: Path, embedder):
    """Rows of a verl parquet export scored by the adapter one at a time equal the reward pool's
    batch scores (contains matching without an engine), with ADRPO counts for the batch step."""
    from mnemoray.rewards.items import RewardItem, RewardScorer

    prompts = [dense_qa_prompt("p0"), dense_qa_prompt("p1", qa_settings={"match": "judge"}),
               dense_qa_prompt("p2", "semantic"), dense_qa_prompt("p3")]
    rows = pq.read_table(export_verl_parquet(prompts, tmp_path / "train.parquet")).to_pylist()
    both = json.dumps({"operations": [{"action": "ADD", "ids": [], "text": "Sam moved to Lisbon"},
                                      {"action": "ADD", "ids": [], "text": "Sam drives a red Toyota"}]})
    completions = [MOVED, MOVED, "I think Sam moved.", both]
    outs = [compute_score(r["data_source"], text, r["reward_model"]["ground_truth"], r["extra_info"],
                          reward="membuilder-qa") for r, text in zip(rows, completions, strict=True)]
    assert all(list(o) == list(outs[0]) for o in outs)  # verl stacks every sample by the first one's keys
    # Lisbon from the rollout's note, Biscuit from the store, the car nowhere: 2 / 3, one item of each type served
    ok, judged, prose, full = outs
    assert ok["score"] == pytest.approx(2 / 3) and ok["reward_failed"] == 0 and ok["qa_correct"] == 2
    assert json.loads(ok["attribution_counts"]) == {"episodic": 1, "semantic": 1} and ok["match"] == "contains"
    assert judged["reward_failed"] == 1 and "match 'judge' needs an engine" in judged["reward_error"]
    assert prose["score"] == 0.0 and prose["reward_failed"] == 0 and prose["format_failed"] == 1  # a real 0
    assert full["qa_correct"] == 3 and json.loads(full["attribution_counts"]) == {"episodic": 2, "semantic": 1}
    loop = RewardScorer("membuilder-qa").score([RewardItem(p.id, p.data_source, text, p.ground_truth, p.extra_info)
                                                for p, text in zip(prompts, completions, strict=True)])
    assert [o["score"] for o in outs] == pytest.approx([r.score for r in loop])
    extra_info = np.empty(4, dtype=object)
    extra_info[:] = [r["extra_info"] for r in rows]
    data = batch(torch.ones(4, 2), extra_info=extra_info, **verl_stack(outs))
    # episodic items served 3 correct answers, semantic 2: the episodic samples are boosted
    assert apply_attribution(data, alpha=4.0).weights == [4.0, 4.0, 1.0, 4.0]
    bad = compute_score("membuilder", MOVED, None, {"memory_type": "episodic"}, reward="membuilder-qa")
    assert bad["reward_failed"] == 1 and "extra_info['state_before'] is required" in bad["reward_error"]
    with pytest.raises(RewardConfigError, match=r"reward engine .*nope.yaml"):
        compute_score("membuilder", MOVED, None, {}, reward="membuilder-qa", engine=str(tmp_path / "nope.yaml"))
