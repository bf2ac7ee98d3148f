"""The memory service's replicas behind the ingress (docs/ARCHITECTURE.md, "Memory service"):
the sentence encoder (`Embedder`), `HandleEngine` (how frameworks reach the memory model of
`memory_model.py`) and the tenants' memories (`MemoryStore`, one write queue per tenant,
pending sessions retried). `memory_app.py` holds the FastAPI ingress and builds the app."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from mnemoray.config.service import MemoryServiceConfig
from mnemoray.llm.types import ChatRequest, ChatResult
from mnemoray.service.batching import PrimedEmbedder, QueryBatcher
from mnemoray.service.schemas import ServiceError
from mnemoray.service.tenants import TenantRegistry
from mnemoray.torch_threads import set_torch_threads

log = logging.getLogger("mnemoray.memory_service")


def error_body(message: str, status: int, kind: str = "invalid_request_error") -> dict[str, Any]:
    """An OpenAI-style error body (the store's failures and the ingress's alike)."""
    return {"error": {"message": message, "type": kind, "code": status}}


# -- embedder --------------------------------------------------------------------------
@serve.deployment
class Embedder:
    """The sentence encoder; single texts are batched across concurrent callers."""

    def __init__(self, model: str | None, device: str, batching: bool, max_batch_size: int, wait_s: float,
                 busy_wait_s: float = 0.0, torch_threads: int = 1) -> None:
        from mnemoray.index.embedder import Embedder as LocalEmbedder

        set_torch_threads(torch_threads)
        self.embedder = LocalEmbedder(model, device=device, store=None)
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.busy_wait_s = busy_wait_s
        self._stats = {"calls": 0, "texts": 0, "max_batch": 0, "shared_searches": 0}
        self.encode_batch.set_max_batch_size(max_batch_size)
        self.encode_batch.set_batch_wait_timeout_s(wait_s)
        self.encode_busy.set_batch_wait_timeout_s(busy_wait_s)

    def dim(self) -> int:
        return self.embedder.dim

    def batch_stats(self) -> dict[str, int]:
        return dict(self._stats)

    def _encode(self, texts: list[str]) -> np.ndarray:
        self._stats["calls"] += 1
        self._stats["texts"] += len(texts)
        self._stats["max_batch"] = max(self._stats["max_batch"], len(texts))
        return self.embedder.encode(texts)

    async def encode(self, text: str, busy: int = 1) -> np.ndarray:
        """`busy`: searches the caller has in flight (this one included). With others coming,
        a query waits up to `busy_wait_s` for them, so one forward pass serves them all."""
        if not self.batching:
            return (await asyncio.to_thread(self._encode, [text]))[0]
        if busy > 1 and self.busy_wait_s > 0:
            self.encode_busy.set_max_batch_size(min(busy, self.max_batch_size))
            return await self.encode_busy(text)
        return await self.encode_batch(text)

    async def encode_many(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self._encode, texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return list(await asyncio.to_thread(self._encode, texts))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02)
    async def encode_busy(self, texts: list[str]) -> list[np.ndarray]:
        if len(texts) > 1:
            self._stats["shared_searches"] += len(texts)
        return list(await asyncio.to_thread(self._encode, texts))


def remote_embedder(handle: DeploymentHandle) -> PrimedEmbedder:
    """The frameworks' embedder backed by the Embedder deployment (`placement: deployment`)."""
    return PrimedEmbedder(lambda texts: handle.encode_many.remote(texts).result(),
                          lambda: handle.dim.remote().result())


# -- the memory model, seen by frameworks -------------------------------------------
class HandleEngine:
    """The engine contract over the MemoryModel deployment (for LLM-built frameworks)."""

    name = "memory-model"
    model = "memory-model"

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        responses = [self.handle.generate.remote(r) for r in requests]
        out = []
        for request, response in zip(requests, responses):
            try:
                out.append(response.result())
            except Exception as err:  # noqa: BLE001 - a lost replica fails this call, typed
                out.append(ChatResult(id=request.id, error=f"{type(err).__name__}: {err}", error_kind="engine"))
        return out


# -- per-tenant state ------------------------------------------------------------------
WRITES = {"add_session", "delete", "import_"}
READS = {"search", "list_items", "get", "history", "session_status", "export"}


@serve.deployment
class MemoryStore:
    """Tenants' memories. `embedder`: the Embedder deployment's handle, or None to encode in
    this replica (`embedder.placement: store`)."""

    def __init__(self, cfg: dict[str, Any], embedder: DeploymentHandle | None, model: DeploymentHandle | None) -> None:
        from mnemoray.memory.registry import FRAMEWORKS, build_memory

        self.cfg = MemoryServiceConfig.model_validate(cfg)
        self.data_dir = Path(self.cfg.data_dir)
        self.registry = TenantRegistry(self.data_dir, admin_key=None)
        self.embedder = embedder
        self.batcher: QueryBatcher | None = None
        if embedder is None:
            from mnemoray.index.embedder import Embedder as LocalEmbedder

            emb = self.cfg.embedder
            set_torch_threads(emb.torch_threads)
            local = LocalEmbedder(emb.model, device=emb.device, store=None)
            self.batcher = QueryBatcher(local.encode, emb.max_batch_size if emb.batching else 1)
            self.remote = remote = PrimedEmbedder(local.encode, lambda: local.dim)
        else:
            self.remote = remote = remote_embedder(embedder)
        self._embeds = {name for name in FRAMEWORKS.names() if FRAMEWORKS.spec(name).uses_embedder}
        engine = HandleEngine(model) if model is not None else None

        def make(name: str):
            extra = {"engine": engine} if FRAMEWORKS.spec(name).built_by_llm else {}
            return build_memory(self.cfg.memory.model_copy(update={"name": name}), embedder=remote, **extra)

        self._make = make
        self._memories: dict[str, Any] = {}
        self._open_lock = threading.Lock()
        self._queues: dict[str, asyncio.Lock] = {}
        self._stop = threading.Event()
        self._retrier = threading.Thread(target=self._retry_loop, name="pending-sessions", daemon=True)
        self._retrier.start()

    def __del__(self) -> None:
        self._stop.set()

    def _memory(self, tenant: str, framework: str):
        from mnemoray.service.ingest import TenantMemory

        with self._open_lock:
            mem = self._memories.get(tenant)
            if mem is None:
                mem = TenantMemory(self.registry.tenant_dir(tenant), framework, self._make,
                                   max_attempts=self.cfg.max_attempts)
                self._memories[tenant] = mem
            return mem

    def _retry_loop(self) -> None:
        """Pending sessions of every tenant: at start (a restart finishes what a crash left),
        then every `retry_interval_s`."""
        while True:
            for name in self.registry.names():
                if self._stop.is_set():
                    return
                tenant = self.registry.get(name)
                if tenant is None:
                    continue
                try:
                    mem = self._memory(tenant.name, tenant.framework)
                    if mem.store.sessions("pending"):
                        mem.retry_pending()
                except Exception:  # noqa: BLE001 - keep retrying the others; logged
                    log.exception("retrying pending sessions of tenant %s", name)
            if self._stop.wait(self.cfg.retry_interval_s):
                return

    async def batch_stats(self) -> dict[str, int]:
        """How query encodes were shared (the Embedder deployment's, with `placement: deployment`)."""
        if self.batcher is not None:
            return dict(self.batcher.stats)
        return await self.embedder.batch_stats.remote()

    async def _query_vector(self, text: str, busy: int) -> np.ndarray:
        if self.batcher is not None:
            return await self.batcher.encode(text)
        return await self.embedder.encode.remote(text, busy)

    async def search(self, tenant: str, framework: str, query: str, k: int, busy: int = 1) -> tuple[int, bytes]:
        """A search's whole HTTP body, JSON-encoded here: the ingress sends the bytes as they are."""
        status, out = await self.call(tenant, framework, "search", query, k, busy=busy)
        return status, json.dumps({"results": out} if status == 200 else out).encode()

    async def call(self, tenant: str, framework: str, op: str, *args: Any, busy: int = 1) -> tuple[int, Any]:
        """`op` on the tenant's memory -> (status, body); expected failures as statuses.
        `busy`: searches in flight at the caller (a hint for the Embedder deployment's batching).
        Reads never wait for the tenant's write queue."""
        if op not in WRITES | READS:
            return 400, {"error": {"message": f"unknown operation {op}", "type": "invalid_request_error"}}
        try:
            mem = self._memories.get(tenant)
            if mem is None:
                mem = await asyncio.to_thread(self._memory, tenant, framework)
            fn = getattr(mem, op)
            if op == "search" and framework in self._embeds:
                # the query's vector on the event loop (batched with other callers), so the
                # worker thread only ranks
                self.remote.prime(args[0], await self._query_vector(args[0], busy))
            if op in WRITES:
                queue = self._queues.setdefault(tenant, asyncio.Lock())
                async with queue:  # one write at a time per tenant, in arrival order
                    return 200, await asyncio.to_thread(fn, *args)
            return 200, await asyncio.to_thread(fn, *args)
        except ServiceError as err:
            return err.status, error_body(err.message, err.status, err.kind)

    async def drop(self, tenant: str) -> None:
        with self._open_lock:
            mem = self._memories.pop(tenant, None)
        if mem is not None:
            queue = self._queues.setdefault(tenant, asyncio.Lock())
            async with queue:
                mem.close()
