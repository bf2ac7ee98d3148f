"""GRPO / ADRPO on Ray: policy workers on Ray Train, rollout engines and reward actors beside them.

Roles (docs/ARCHITECTURE.md, "GRPO on Ray"):
- policy workers: a Ray Train `TorchTrainer` worker group, one DeepSpeed engine each
  (the SFT plumbing: engine, checkpoints, resume, restarts on failure, HF export);
- rollout engines: `RolloutActor`s holding a sampler that receives new weights after
  every update (one copy in the object store per update); or, with rollout.colocate,
  rank 0's own DeepSpeed module samples (no actors, no weight sync: verl's hybrid engine);
- reward actors: a `RewardPool` computing rewards concurrently, retried, none lost;
- the controller: rank 0's loop. Each step it pushes weights, asks the engines for n
  responses per prompt and the pool for their rewards, and broadcasts them to every rank;
  then each rank scores its share under the old and reference policies and updates.

The driver creates the rollout engines and the reward pool (with their placement groups),
so they outlive a policy-worker restart and nothing they reserve is left behind by it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemoray.config.grpo import GRPOConfig
from mnemoray.distributed.actors.reward_pool import RewardPool
from mnemoray.distributed.actors.rollout import generate_split, start_rollout_actors
from mnemoray.distributed.actors.weight_sync import weight_sync_for
from mnemoray.distributed.placement import current_node, release
from mnemoray.distributed.train.sft import RayCheckpoints, copy_export
from mnemoray.registry import load_target
from mnemoray.rl.collect import Collector, Generate, Score, StepBatch, padded, reward_record, step_slots
from mnemoray.rl.environments import ENVIRONMENTS, RLPrompt
from mnemoray.rl.losses import GRPOLossConfig
from mnemoray.rl.rollout import PromptInput, SamplingSettings
from mnemoray.rl.rollout_registry import ROLLOUTS
from mnemoray.train.collectives import all_sum, broadcast_from_rank0, gather_all

STATE_KEY = "mnemoray_grpo"
DS_TAG = "deepspeed"


def step_prompts(prompts: list[RLPrompt], step: int, per_step: int, seed: int) -> list[tuple[str, RLPrompt]]:
    """The prompts of a step (1-based), the same on a resumed run (`rl.collect.step_slots`)."""
    return step_slots(prompts, step, per_step, seed)


def reward_items(slots: list[tuple[str, RLPrompt]], rollouts: list[Any]) -> list[Any]:
    from mnemoray.rewards.items import RewardItem

    by_slot = dict(slots)
    return [RewardItem(id=r.id, data_source=by_slot[r.prompt_id].data_source, solution_str=r.text,
                       ground_truth=by_slot[r.prompt_id].ground_truth,
                       extra_info=dict(by_slot[r.prompt_id].extra_info or {})) for r in rollouts]


@contextlib.contextmanager
def timed(timing: dict[str, float], key: str) -> Iterator[None]:
    """Adds the block's wall time to timing[key] (a step may generate and score several times)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0


def timed_generate(engines: list[Any], timing: dict[str, float], version: int, synced: Any,
                   inputs: list[PromptInput], settings: SamplingSettings, seed: int) -> list[Any]:
    """Rollouts from the engines at weight `version` (time added to timing["generate_s"])."""
    with timed(timing, "generate_s"):
        return generate_split(engines, inputs, settings, seed=seed, version=version, weights=synced)


def timed_colocated_generate(sampler: Any, engine: Any, timing: dict[str, float], inputs: list[PromptInput],
                             settings: SamplingSettings, seed: int) -> list[Any]:
    """Rollouts sampled by the policy's own module (rollout.colocate), in eval mode and on a
    forked RNG so the training loop's random state is untouched."""
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with timed(timing, "generate_s"), torch.random.fork_rng(devices=devices):
        engine.eval()
        try:
            return sampler.generate(inputs, settings, seed)
        finally:
            engine.train()


def timed_score(pool: Any, timing: dict[str, float], items: list[Any]) -> dict[str, Any]:
    """Rewards from the pool, by item id (time added to timing["reward_s"])."""
    with timed(timing, "reward_s"):
        return pool.score(items)


def sample_and_score(generate: Generate, score: Score, settings: SamplingSettings,
                     slots: list[tuple[str, RLPrompt]], seed: int) -> tuple[list[Any], list[Any]]:
    """n rollouts per slot, then their rewards."""
    rollouts = generate([PromptInput(key, tuple(p.messages)) for key, p in slots], settings, seed)
    scored = score(reward_items(slots, rollouts))
    return rollouts, [scored[r.id] for r in rollouts]


def collect_step(cfg: GRPOConfig, prompts: list[RLPrompt], step: int,
                 sample: Callable[[list[tuple[str, RLPrompt]], int], tuple[list[Any], list[Any]]]
                 ) -> tuple[list[Any], list[float], list[float], dict[str, Any]]:
    """The controller's part of a step: rollouts, rewards, dynamic sampling, ADRPO weights.

    `sample(slots, seed)` returns n rollouts per slot (grouped, in slot order) and their
    RewardResults. Returns (rollouts, scores, weights, reward record), the same on a resumed
    run: every sampling round draws its prompts and seed from (step, round).
    """
    from mnemoray.rl.advantages import drop_and_refill
    from mnemoray.rl.step_batch import AttributionSettings, keep_batch_size, sample_attribution

    alg, seed, per_step, n = cfg.algorithm, cfg.schedule.seed, cfg.rollout.prompts_per_step, cfg.rollout.n
    slots = step_prompts(prompts, step, per_step, seed)
    slot_prompts = dict(slots)
    rollouts, results = sample(slots, seed * 1_000_003 + step)
    record = reward_record(results)  # the policy's reward on the step's own prompts
    if alg.dynamic_sampling:
        batch_scores, extra_rollouts, extra_results, rounds = [r.score for r in results], [], [], 0
        refill = drop_and_refill(batch_scores, [], n)
        while refill.shortfall and rounds < alg.max_refill_rounds:
            rounds += 1
            fresh = step_prompts(prompts, step, per_step, seed + 104_729 * rounds)  # another draw per round
            extra = [(f"r{rounds}.{key}", p) for key, p in fresh]
            slot_prompts.update(extra)
            more, more_results = sample(extra, seed * 1_000_003 + step + 7_919 * rounds)
            extra_rollouts += more
            extra_results += more_results
            refill = drop_and_refill(batch_scores, [r.score for r in extra_results], n)
        chosen = keep_batch_size(refill, per_step, n)
        rollouts, results = [(rollouts + extra_rollouts)[i] for i in chosen], [(results + extra_results)[i]
                                                                                for i in chosen]
        record.update({"dynamic/dropped": refill.dropped, "dynamic/refilled": refill.refilled,
                       "dynamic/shortfall": refill.shortfall, "dynamic/rounds": rounds})
    weights = [1.0] * len(rollouts)
    if alg.attribution is not None:
        a = alg.attribution
        attribution, invalid = sample_attribution(
            [r.extras for r in results], [slot_prompts[r.prompt_id].extra_info for r in rollouts],
            AttributionSettings(a.alpha, a.boost_core, a.counts_key, a.type_key))
        weights = attribution.weights
        record.update({f"attribution/{kind}": count for kind, count in attribution.totals.items()})
        record["attribution/dominant"] = attribution.dominant
        record["attribution/boosted"] = sum(w != 1.0 for w in weights)
        record["attribution/invalid"] = invalid
    return rollouts, [r.score for r in results], weights, record


class PromptCollector:
    """The loop's default collector: n responses per single-turn prompt (`collect_step`),
    advantages over each prompt's group."""

    def __init__(self, cfg: GRPOConfig, prompts: list[RLPrompt]):
        self.cfg, self.prompts = cfg, prompts
        ro = cfg.rollout
        self.settings = SamplingSettings(n=ro.n, max_new_tokens=ro.max_new_tokens, temperature=ro.temperature,
                                         top_p=ro.top_p)

    def collect(self, step: int, generate: Generate, score: Score) -> StepBatch:
        from mnemoray.rl.advantages import group_advantages

        sample = functools.partial(sample_and_score, generate, score, self.settings)
        rollouts, scores, weights, record = collect_step(self.cfg, self.prompts, step, sample)
        adv = group_advantages(scores, [r.prompt_id for r in rollouts],
                               scale="std" if self.cfg.algorithm.advantage_scale == "std" else "none")
        return StepBatch(rollouts, adv.advantages.tolist(), weights, record, adv.zero_variance_groups, adv.groups)


def trajectory_hook(cfg: GRPOConfig) -> Any:
    """The environment's multi-step collector class when the config asks for trajectories, else None."""
    if cfg.environment.trajectories is None:
        return None
    return load_target(ENVIRONMENTS.spec(cfg.environment.name).trajectories)


def collector_for(cfg: GRPOConfig, data: list[Any]) -> Collector:
    hook = trajectory_hook(cfg)
    return PromptCollector(cfg, data) if hook is None else hook(cfg, data)


def policy_threads(setting: Any) -> int | None:
    """Set this policy worker's torch threads: with "auto", its node's CPUs shared by the
    workers on that node (they score and update together; the engines wait meanwhile)."""
    import ray.train

    from mnemoray.distributed.placement import node_cpus
    from mnemoray.rl.threads import machine_cores, phase_threads, set_torch_threads

    threads = phase_threads(setting, node_cpus(current_node()), ray.train.get_context().get_local_world_size(),
                            machine_cores())
    set_torch_threads(threads)
    return threads


def _worker_entry(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    import ray
    import torch
    from transformers import AutoTokenizer

    from mnemoray.rl.update import UpdatePlan, policy_update, score, worker_batch
    from mnemoray.train.ds_config import deepspeed_config_for, lr_factor
    from mnemoray.train.export import export_hf, full_state_dict
    from mnemoray.train.loop import MetricsLog, build_ds_engine, engine_facts
    from mnemoray.train.reference import build_reference

    cfg = GRPOConfig.model_validate(config["cfg"])
    os.environ.setdefault("DS_ACCELERATOR", cfg.ray.accelerator)
    io = RayCheckpoints()
    threads = policy_threads(cfg.ray.torch_threads)
    torch.manual_seed(cfg.schedule.seed)
    rank, world = io.rank, io.world_size
    model_path = config["model_path"]
    data: list[Any] = ray.get(config["prompts"])  # prompts, or a trajectory environment's sources
    engines = config["rollout_actors"]
    pool = config["reward_pool"] if rank == 0 else None
    collector = collector_for(cfg, data) if rank == 0 else None
    alg, sched = cfg.algorithm, cfg.schedule
    total_updates = sched.steps * alg.epochs * alg.minibatches
    ds_conf = deepspeed_config_for(cfg.deepspeed, cfg.optim, alg.micro_batch_size, cfg.micro_batches, world)
    opt = cfg.optim
    engine = build_ds_engine(ds_conf, model_path, cfg.ray.accelerator, cfg.model.gradient_checkpointing,
                             lambda s: lr_factor(s, total_updates, opt.warmup_steps, opt.min_lr_ratio))
    reference = build_reference(ds_conf, model_path, engine.device) if alg.kl_coef > 0 or alg.log_kl else None
    pad_id = AutoTokenizer.from_pretrained(model_path).pad_token_id or 0
    colocated = cfg.rollout.colocate
    sampler = None
    if colocated and rank == 0:  # rank 0 samples with its own module: nothing to sync
        from mnemoray.rl.rollout import HFSampler

        sampler = HFSampler(model_path, device=cfg.rollout.device, model=engine.module)
    weight_sync = None
    if rank == 0 and not colocated:
        ro = cfg.rollout
        weight_sync = weight_sync_for(ro.weight_sync, engines, device=ro.device, bucket_mb=ro.sync_bucket_mb,
                                      timeout_s=ro.sync_timeout_s)
    state = {"step": 0}
    with io.resume_dir() as ckpt:
        if ckpt is not None:
            _, client = engine.load_checkpoint(str(ckpt), tag=DS_TAG)
            state = dict(client[STATE_KEY])
    log = MetricsLog(cfg.run_dir, rank == 0, state["step"], engine=engine_facts(engine), world_size=world)
    policy_nodes, policy_threads_ = zip(*gather_all((current_node(), threads)))
    if rank == 0:
        log.event("placement", policy=list(policy_nodes), rollout=ray.get([e.node.remote() for e in engines]),
                  reward=pool.nodes(), colocated=colocated, weight_sync=None if colocated else cfg.rollout.weight_sync)
        if reference is not None:
            log.event("reference", zero_stage=ds_conf["zero_optimization"]["stage"],
                      dtype=str(next(reference.parameters()).dtype).removeprefix("torch."),
                      device=str(engine.device))
        log.event("threads", policy=list(policy_threads_),
                  rollout=ray.get([e.torch_threads.remote() for e in engines]))
    plan = UpdatePlan(
        loss=GRPOLossConfig(eps_low=alg.eps_low, eps_high=alg.eps_high, dual_clip=alg.dual_clip,
                            kl_coef=alg.kl_coef, kl_estimator=alg.kl_estimator, agg=alg.loss_agg),
        entropy_coef=alg.entropy_coef, epochs=alg.epochs, minibatches=alg.minibatches,
        micro_batch_size=alg.micro_batch_size)
    for step in range(state["step"] + 1, sched.steps + 1):
        t_step = time.perf_counter()
        timing: dict[str, float] = {}
        # 1. the engines get the current weights, every step: also the first one of a restarted
        #    loop, since the engines outlive the policy workers and may hold a crashed run's
        #    (colocated: rank 0 samples with the weights it trains, nothing to push)
        t0 = time.perf_counter()
        synced = None
        if not colocated:
            state_dict = full_state_dict(engine, cfg.deepspeed.zero_stage, rank,  # collective under ZeRO-3
                                         to_cpu=not (weight_sync and weight_sync.on_device))
            synced = weight_sync.push(state_dict, step - 1) if rank == 0 else None
            del state_dict
        timing["sync_s"] = time.perf_counter() - t0
        # 2. rollouts and rewards, on the controller (rank 0), then shared with every rank
        payload = None
        if rank == 0:
            generate = (functools.partial(timed_colocated_generate, sampler, engine, timing) if colocated
                        else functools.partial(timed_generate, engines, timing, step - 1, synced))
            score_items = functools.partial(timed_score, pool, timing)
            payload = (collector.collect(step, generate, score_items), timing)
            del generate  # it holds `synced`, which may hold the gathered weights (on the GPU with NCCL)
        del synced  # before the update: nothing keeps a second full copy of the weights alive
        collected, shared_timing = broadcast_from_rank0(payload, rank)
        timing.update({k: v for k, v in shared_timing.items() if k not in timing})
        # 3. the collector's samples and advantages, padded to the update's fixed size; this rank's share
        rollouts, advantages, sample_weights = padded(collected, cfg.samples_per_step, pad_id)
        mine = list(range(rank, len(rollouts), world))
        batch = worker_batch([rollouts[i] for i in mine], [advantages[i] for i in mine],
                             [sample_weights[i] for i in mine], pad_id).to(engine.device)
        t0 = time.perf_counter()
        engine.eval()
        if alg.epochs * alg.minibatches > 1:  # on-policy updates use the policy's own log-probs
            batch.extras["old_logp"] = score(engine, batch, alg.micro_batch_size)
        if reference is not None:
            batch.extras["ref_logp"] = score(reference, batch, alg.micro_batch_size)
        engine.train()
        timing["ref_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = policy_update(engine, batch, plan, seed=sched.seed * 7919 + step)
        timing["update_s"] = time.perf_counter() - t0
        # 4. one record per step, token-weighted over all ranks
        keys = sorted(k for k in metrics if k not in ("tokens", "optimizer_steps"))
        keys = broadcast_from_rank0(keys, rank)
        sums = all_sum([metrics.get(k, 0.0) * metrics["tokens"] for k in keys] + [metrics["tokens"]])
        tokens = sums[-1]
        real = collected.rollouts
        lengths = [len(r.response_ids) for r in real]
        record: dict[str, Any] = {"step": step, **collected.record,
                                  **{k: s / tokens for k, s in zip(keys, sums[:-1]) if tokens}}
        record.update(response_len_mean=statistics.fmean(lengths),
                      response_clipped_frac=sum(not r.finished for r in real) / len(real),
                      samples=len(real), zero_std_groups=collected.zero_std_groups, groups=collected.groups,
                      lr=engine.get_lr()[0])
        timing["step_s"] = time.perf_counter() - t_step
        record["timing"] = timing
        final = step == sched.steps
        if rank == 0:
            log.log(record)
        if step % sched.save_every == 0 or final:
            tmp = Path(tempfile.mkdtemp(prefix=f"grpo-step{step}-"))
            try:
                engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={STATE_KEY: {"step": step}})
                if final:
                    export_hf(engine, cfg.deepspeed.zero_stage, rank, model_path, tmp / "hf")
                io.save({"step": step, "reward_mean": record["reward_mean"]}, tmp, step)
                log.event("checkpoint", step=step)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if weight_sync is not None:
        log.event("weight_sync", method=weight_sync.name, groups_built=weight_sync.builds,
                  fallbacks=weight_sync.fallbacks)
        weight_sync.close()
    log.event("finished", step=sched.steps)


@dataclass
class GRPOResult:
    run_dir: Path
    export_dir: Path | None
    checkpoint: str | None
    metrics: dict[str, Any]
    prompts: int
    invalid_prompts: int
    error: str | None = None


def load_run_data(cfg: GRPOConfig) -> tuple[list[Any], list[Any]]:
    """What the collector draws from: the environment's prompts, or (with trajectories) the
    sources its trajectory hook loads; fails on bad data before Ray starts."""
    hook = trajectory_hook(cfg)
    if hook is None:
        return load_run_prompts(cfg)
    data, errors = hook.load(cfg.environment)
    if not data:
        raise ValueError(f"{cfg.environment.path}: nothing to run trajectories over")
    return data, errors


def load_run_prompts(cfg: GRPOConfig) -> tuple[list[RLPrompt], list[Any]]:
    env = cfg.environment
    prompts, errors = ENVIRONMENTS.load(env.name)(env.path, skip_invalid=env.skip_invalid)
    if env.limit is not None:
        prompts = prompts[: env.limit]
    if not prompts:
        raise ValueError(f"{env.path}: no usable prompts")
    return prompts, errors


def trainer_for(cfg: GRPOConfig, config: dict[str, Any]) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.ray.cpus_per_worker} | ({"GPU": 1} if cfg.ray.use_gpu else {})
    return TorchTrainer(
        _worker_entry,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=cfg.ray.workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources, placement_strategy=cfg.ray.placement),
        run_config=RunConfig(name=cfg.name, storage_path=str(cfg.storage),
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.schedule.keep)),
    )


def run_grpo(cfg: GRPOConfig, log: Any = print) -> GRPOResult:
    """Train; metrics.jsonl, report.md, plots and the HF export land in out/name."""
    import ray

    from mnemoray.distributed.runtime import ray_session

    missing = None if cfg.rollout.colocate else ROLLOUTS.spec(cfg.rollout.engine).missing()
    if missing:
        raise RuntimeError(missing)  # before Ray starts, not when the first engine actor is built
    prompts, errors = load_run_data(cfg)  # fails before Ray starts on a bad file
    cfg = cfg.model_copy(update={"out": cfg.out.expanduser().resolve()})
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if errors:
        (run_dir / "invalid_prompts.txt").write_text("".join(f"{e}\n" for e in errors))
        log(f"skipped {len(errors)} invalid prompt records (listed in invalid_prompts.txt)")
    with ray_session(cfg.ray):
        model_path = str(Path(cfg.resolve_model_path()).expanduser().resolve())
        ro = cfg.rollout
        engines, engine_group = ([], None) if ro.colocate else start_rollout_actors(
            ro.engines, ro.engine, model_path, num_cpus=ro.cpus_per_engine, num_gpus=ro.gpus_per_engine,
            device=ro.device, dtype=ro.dtype, torch_threads=ro.threads, strategy=ro.placement,
            options=ro.engine_options)
        pool = None
        try:
            pool = RewardPool.from_config(cfg.reward)
            config = {"cfg": cfg.model_dump(mode="json"), "model_path": model_path, "prompts": ray.put(prompts),
                      "rollout_actors": engines, "reward_pool": pool}
            result = trainer_for(cfg, config).fit()
        finally:
            if pool is not None:
                pool.close()
            for actor in engines:
                ray.kill(actor)
            release(engine_group)
    export_dir = copy_export(result.checkpoint, run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():
        write_report(cfg, metrics_path, run_dir)
    error = repr(result.error) if result.error else None
    return GRPOResult(run_dir, export_dir, result.checkpoint.path if result.checkpoint else None,
                      dict(result.metrics or {}), len(prompts), len(errors), error)


def write_report(cfg: GRPOConfig, metrics_path: Path, run_dir: Path) -> Path:
    from mnemoray.rl.report import grpo_report

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return grpo_report(cfg.name, records, run_dir)
