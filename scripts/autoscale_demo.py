"""The driver of the cluster lane's autoscaling demo (tests/cluster/test_autoscaling_lane.py):
a synthesis-shaped Ray Data job over an autoscaling actor pool, run against a cluster whose
head has no CPU, so every actor's CPU is demand the autoscaler must add worker nodes for.

One seed persona per row (the synthesis jobs' input), through `map_one_per_task` (the actor
pool the synthesis and evaluation jobs share, `ray.min_workers`..`ray.workers`, one CPU per
actor); each actor embeds its persona's facts with MiniLM. Prints one JSON line: per row the
persona id, the node its actor ran on and how many nodes were alive then.

    RAY_ADDRESS=127.0.0.1:PORT python scripts/autoscale_demo.py --personas FILE --limit 4
"""

from __future__ import annotations

import argparse
import json
import sys

from mnemoray.config.ray import RayConfig
from mnemoray.synth.personas import load_seed_personas


class PersonaEmbedder:
    """Ray Data actor: loads MiniLM once, embeds one persona's facts per call."""

    def __init__(self) -> None:
        from mnemoray.index.embedder import Embedder

        self.embedder = Embedder(store=None)

    def __call__(self, batch: dict) -> dict:
        import ray

        texts = [json.loads(record) for record in batch["record"]]
        facts = [fact for persona in texts for fact in (persona["facts"] or [persona["description"]])]
        vectors = self.embedder.encode(facts)
        alive = sum(1 for n in ray.nodes() if n["Alive"])
        return {"id": batch["id"], "node": [ray.get_runtime_context().get_node_id()] * len(texts),
                "alive_nodes": [alive] * len(texts), "dim": [int(vectors.shape[1])] * len(texts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", required=True, help="seed personas file (the synthesis jobs' input)")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--min-workers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    personas, errors = load_seed_personas(args.personas, args.limit)
    if not personas:
        print(f"error: {args.personas}: no valid personas ({len(errors)} invalid)", file=sys.stderr)
        return 2

    import ray

    from mnemoray.distributed.runtime import map_one_per_task, worker_runtime_env

    ray.init(runtime_env=worker_runtime_env())
    rows = [{"id": p.id, "record": json.dumps(p.model_dump())} for p in personas]
    pool = RayConfig(min_workers=args.min_workers, workers=args.workers, cpus_per_worker=1)
    out = map_one_per_task(rows, PersonaEmbedder, {}, pool).take_all()
    ray.shutdown()
    print(json.dumps({"rows": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in out]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
