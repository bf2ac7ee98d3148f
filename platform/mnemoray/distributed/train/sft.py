"""SFT on Ray Train V2: one DeepSpeed engine per TorchTrainer worker, data from Ray Data shards.

Fault tolerance and resume are Ray Train's: checkpoints go through `ray.train.report`
into `storage_path/name`; a worker that dies restarts the group from the latest one
(`FailureConfig`), and rerunning with the same run name picks it up too. Rank 0 marks a
checkpoint complete once every rank wrote its part, so a restart also finds one that
Ray's controller had not registered yet when the worker died.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.data.collate_fn import NumpyBatchCollateFn

from mnemoray.config.train import SFTConfig
from mnemoray.distributed.train.sft_data import build_datasets
from mnemoray.train.dataset import DataStats
from mnemoray.train.ds_config import total_steps
from mnemoray.train.tokenize import collate, epoch_order, epoch_seed, held_batches


class PadCollate(NumpyBatchCollateFn):
    """Right-pads ragged token rows into tensors (the collate form iter_torch_batches expects)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return collate(batch, self.pad_id)


class RayCheckpoints:
    """A Ray Train worker's rank and its checkpoints: resume from the newest complete one,
    save one with every rank's part (any training stage: SFT, GRPO)."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    @contextlib.contextmanager
    def resume_dir(self) -> Iterator[Path | None]:
        """The newest complete checkpoint: Ray Train's, or a newer one it never registered.

        Ray Train's controller registers a reported checkpoint on its next poll; a worker that
        dies in between leaves a complete checkpoint in storage that Ray does not know. Its
        completion marker makes it safe to use; reporting it again (no upload) hands it back
        to Ray's keep-K bookkeeping.
        """
        import ray.train

        known = ray.train.get_checkpoint()
        newest = newest_complete_checkpoint(ray.train.get_context().get_storage())
        adopt = newest is not None and (known is None or checkpoint_step(known.path) < checkpoint_step(newest.path))
        ckpt = newest if adopt else known
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)
        if adopt:
            ray.train.report({"step": checkpoint_step(ckpt.path), "adopted": True}, checkpoint=ckpt,
                             checkpoint_dir_name=Path(ckpt.path).name,
                             checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)

    def save(self, metrics: dict[str, Any], directory: Path, step: int) -> None:
        import ray.train

        name = checkpoint_dir_name(step)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
                         checkpoint_dir_name=name)
        _barrier()  # every rank's part is in storage
        if self.rank == 0:
            storage = ray.train.get_context().get_storage()
            mark_complete(storage.storage_filesystem, f"{storage.experiment_fs_path}/{name}", step)


class RayTrainIO(RayCheckpoints):
    """WorkerIO backed by Ray Train: dataset shards, get_checkpoint, report.

    In "memory" shard mode the worker reads its shard once and then steps without a data
    pipeline running beside it; on 2 CPU cores that pipeline's threads added about 20 % to a
    ZeRO-2 step (benchmarks/sft_overhead.py).
    """

    def __init__(self, micro_batch_size: int, pad_id: int, has_eval: bool, shard: str = "stream",
                 shuffle_seed: int = 0):
        super().__init__()
        self.micro = micro_batch_size
        self.pad_id = pad_id
        self._collate = PadCollate(pad_id)
        self.has_eval = has_eval
        self.shard = shard
        self.shuffle_seed = shuffle_seed
        self._held: dict[str, list[dict[str, Any]]] = {}

    def _held_rows(self, name: str) -> list[dict[str, Any]]:
        import ray.train

        if name not in self._held:
            rows: list[dict[str, Any]] = []
            for batch in ray.train.get_dataset_shard(name).iter_batches(batch_size=1024, batch_format="numpy"):
                rows.extend({key: batch[key][i] for key in batch} for i in range(len(batch["input_ids"])))
            self._held[name] = rows
        return self._held[name]

    def _batches(self, name: str, epoch: int = 0) -> Any:
        import ray.train

        if self.shard == "memory":
            rows = self._held_rows(name)
            return held_batches(rows, self.micro, self.pad_id, epoch_order(len(rows), self.shuffle_seed, epoch))
        # Streamed shards: from epoch 1 on, a seeded local shuffle (a window of rows, not the
        # whole shard) so epochs differ while memory stays bounded.
        shuffle = {"local_shuffle_buffer_size": max(256, 16 * self.micro),
                   "local_shuffle_seed": epoch_seed(self.shuffle_seed, epoch)} if epoch else {}
        return ray.train.get_dataset_shard(name).iter_torch_batches(
            batch_size=self.micro, collate_fn=self._collate, drop_last=True, **shuffle)

    def train_batches(self, epoch: int) -> Any:
        return self._batches("train", epoch)

    def eval_batches(self) -> Any:
        return self._batches("eval") if self.has_eval else None


COMPLETE_MARKER = "mnemoray_complete.json"


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_step(path: str) -> int:
    return int(Path(path).name.removeprefix("step_"))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mark_complete(fs: Any, path: str, step: int) -> None:
    with fs.open_output_stream(f"{path}/{COMPLETE_MARKER}") as out:
        out.write(json.dumps({"step": step}).encode())


def newest_complete_checkpoint(storage: Any) -> Any:
    """The highest-step checkpoint folder of this run that every rank finished writing, or None."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    fs, root = storage.storage_filesystem, storage.experiment_fs_path
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return None
    steps = sorted((checkpoint_step(e.path), e.path) for e in entries
                   if e.type == pafs.FileType.Directory and Path(e.path).name.startswith("step_")
                   and Path(e.path).name[5:].isdigit())
    for _, path in reversed(steps):
        if fs.get_file_info(f"{path}/{COMPLETE_MARKER}").type == pafs.FileType.File:
            return Checkpoint(path=path, filesystem=fs)
    return None


def _worker_entry(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    from transformers import AutoTokenizer

    from mnemoray.train.loop import train_worker

    cfg = SFTConfig.model_validate(config["cfg"])
    tok = AutoTokenizer.from_pretrained(config["model_path"])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    io = RayTrainIO(cfg.schedule.micro_batch_size, pad_id, config["has_eval"], cfg.data.shard, cfg.data.shuffle_seed)
    train_worker(cfg, io, config["model_path"], config["total_steps"])


def copy_export(checkpoint: Any, run_dir: Path) -> Path | None:
    """The final checkpoint's hf/ export copied to run_dir/hf (replacing an older one), or None."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        if not (Path(d) / "hf").is_dir():
            return None
        export_dir = run_dir / "hf"
        shutil.rmtree(export_dir, ignore_errors=True)
        shutil.copytree(Path(d) / "hf", export_dir)
    return export_dir


@dataclass
class SFTResult:
    run_dir: Path
    export_dir: Path | None
    checkpoint: str | None
    metrics: dict[str, Any]
    data: DataStats
    total_steps: int
    error: str | None = None


def trainer_for(cfg: SFTConfig, model_path: str, datasets: dict[str, Any], total: int) -> Any:
    """The TorchTrainer of one run; its name and storage path make reruns resume."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        _worker_entry,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "model_path": model_path, "total_steps": total,
                           "has_eval": "eval" in datasets},
        scaling_config=ScalingConfig(num_workers=cfg.ray.workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name, storage_path=str(cfg.storage),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.schedule.keep),
        ),
        datasets=datasets,
    )


def preflight(cfg: SFTConfig) -> None:
    """Fail in a second, not after Ray has started, on paths that do not exist."""
    for src in [*cfg.data.train, *cfg.data.eval]:
        if not src.path.expanduser().is_file():
            raise FileNotFoundError(f"{src.path}: no such data file")
    if cfg.model.path is not None and not (Path(cfg.model.path).expanduser() / "config.json").is_file():
        raise FileNotFoundError(f"{cfg.model.path}: not a Hugging Face checkpoint folder (no config.json)")


def run_sft(cfg: SFTConfig, log: Any = print) -> SFTResult:
    """Prepare data, train on Ray Train, copy the HF export and plot the loss into out/name."""
    from mnemoray.distributed.runtime import ray_session
    from mnemoray.train.plot import plot_metrics

    preflight(cfg)
    cfg = cfg.model_copy(update={"out": cfg.out.expanduser().resolve()})
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with ray_session(cfg.ray):
        model_path = str(Path(cfg.resolve_model_path()).expanduser().resolve())
        train_ds, eval_ds, stats = build_datasets(cfg, model_path)
        (run_dir / "data_stats.json").write_text(json.dumps(stats.as_dict(), indent=2))
        log(f"data: {stats.samples} samples, {stats.rows} rows, {stats.rejects.total} rejected "
            f"{dict(stats.rejects.counts)}, {stats.truncated_samples} truncated")
        if train_ds is None:
            raise ValueError("no usable training samples (see data_stats.json for the reasons)")
        total = total_steps(cfg, stats.rows["train"], cfg.ray.workers)
        datasets = {"train": train_ds} | ({"eval": eval_ds} if eval_ds is not None else {})
        result = trainer_for(cfg, model_path, datasets, total).fit()
    export_dir = copy_export(result.checkpoint, run_dir)
    if (run_dir / "metrics.jsonl").exists():
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "loss.png")
    error = repr(result.error) if result.error else None
    return SFTResult(run_dir, export_dir, result.checkpoint.path if result.checkpoint else None,
                     dict(result.metrics or {}), stats, total, error)
