"""The memory service on Ray Serve: a multi-tenant memory API (docs/ARCHITECTURE.md, "Memory service").

Deployments:
- `MemoryIngress` (FastAPI): authenticates every call by its API key (the tenant comes
  from the key only), parses bodies (422 naming the field, 413 over `max_body_bytes`),
  and maps every failure to a JSON error: never a 500 with a traceback.
- `MemoryStore`: each tenant's `TenantMemory` (SQLite under `data_dir`); one queue per
  tenant serialises its writes; a background thread retries pending sessions (also those
  found on disk after a restart). By default (`store_placement: ingress`) it lives inside
  each ingress replica (no hop between them); `store_placement: deployment` makes it its
  own deployment, scaled on its own (replicas of one tenant coordinate through its file).
- the sentence encoder: by default (`embedder.placement: store`) inside each store replica,
  where concurrent searches share forward passes through `QueryBatcher` (no timer, no hop;
  `service/batching.py`). With `placement: deployment` it is the `Embedder` deployment
  (`@serve.batch`, scaled on its own); a search then carries how many searches its ingress
  has in flight, and with others coming it waits up to `busy_wait_timeout_s` for them.
- `MemoryModel` (only with `llm:`): the engine of an engine config (hf, an
  OpenAI-compatible URL, ...) with `@serve.batch`; LLM-built frameworks call it through
  `HandleEngine`, and `/v1/chat/completions` answers with it.

`mnemoray serve memory --config ...` runs it; `serve/memory_*.yaml` name `app_builder` for
`serve run` / `serve deploy`.
"""

# No `from __future__ import annotations`: FastAPI must see real `Request` annotations.
import asyncio
import json
import logging
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from mnemoray.config.base import load_config
from mnemoray.config.service import DeploymentSettings, MemoryServiceConfig
from mnemoray.llm.openai_protocol import ProtocolError, models_body, to_chat_request, to_completion
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult
from mnemoray.service.batching import PrimedEmbedder, QueryBatcher
from mnemoray.service.schemas import (
    ImportIn,
    SearchIn,
    ServiceError,
    SessionIn,
    TenantIn,
    not_found,
    parse_body,
)
from mnemoray.service.tenants import Tenant, TenantRegistry, load_admin_key

log = logging.getLogger("mnemoray.memory_service")


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


# -- memory model ----------------------------------------------------------------------
@serve.deployment
class MemoryModel:
    """One engine (from an engine config) per replica; requests grouped by `@serve.batch`."""

    def __init__(self, engine_cfg: dict[str, Any], batching: bool, max_batch_size: int, wait_s: float) -> None:
        from mnemoray.config.llm import EngineConfig
        from mnemoray.llm.registry import build_engine

        self.engine = build_engine(EngineConfig.model_validate(engine_cfg))
        self.batching = batching
        self._one_at_a_time = asyncio.Lock()
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(wait_s)

    async def generate(self, request: ChatRequest) -> ChatResult:
        if self.batching:
            return await self.generate_batch(request)
        async with self._one_at_a_time:
            return (await asyncio.to_thread(self.engine.generate, [request]))[0]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def generate_batch(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results = await asyncio.to_thread(self.engine.generate, requests)
        if len(results) != len(requests):
            return [ChatResult(id=r.id, error="engine lost the result", error_kind="engine") for r in requests]
        return results


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
            return err.status, _error(err.message, err.status, err.kind)

    async def drop(self, tenant: str) -> None:
        with self._open_lock:
            mem = self._memories.pop(tenant, None)
        if mem is not None:
            queue = self._queues.setdefault(tenant, asyncio.Lock())
            async with queue:
                mem.close()


# -- HTTP ------------------------------------------------------------------------------
def _error(message: str, status: int, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


def _json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _encoded(status: int, body: bytes) -> Response:
    """A body the store already encoded as JSON (sent as it is: no decode and encode here)."""
    return Response(content=body, status_code=status, media_type="application/json")


def set_torch_threads(threads: int) -> None:
    """Threads of the replica that encodes: Ray gives a fractional-CPU actor 1 OpenMP thread,
    and more threads than free cores make every pass slower."""
    import torch

    torch.set_num_threads(threads)


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceError(422, f"field '{name}': not an integer: {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ServiceError(422, f"field '{name}': must be {bound}")
    return value


api = FastAPI(title="mnemoray memory service")

CHAT_SYSTEM = ("You are a helpful assistant with long-term memory of this user. Relevant memories "
               "(most relevant first):\n{memories}\nUse them when they help; do not invent others.")


@serve.deployment
@serve.ingress(api)
class MemoryIngress:
    """`store`: the MemoryStore deployment's handle, or None to hold the tenants' memories in
    this replica (`store_placement: ingress`)."""

    def __init__(self, cfg: dict[str, Any], store: DeploymentHandle | None, model: DeploymentHandle | None,
                 embedder: DeploymentHandle | None = None) -> None:
        self.cfg = MemoryServiceConfig.model_validate(cfg)
        self.registry = TenantRegistry(self.cfg.data_dir, load_admin_key(self.cfg.admin_key_file))
        self.store = store
        self._local = MemoryStore.func_or_class(cfg, embedder, model) if store is None else None
        self.model = model
        self._searches = 0  # searches in flight here: a hint for the embedder's batching

    async def _to_store(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A MemoryStore method: on the store in this replica, or through the deployment's handle."""
        if self._local is not None:
            return await getattr(self._local, method)(*args, **kwargs)
        return await getattr(self.store, method).remote(*args, **kwargs)

    async def batch_stats(self) -> dict[str, int]:
        """How query encodes were shared (for tests and benchmarks; no HTTP route)."""
        return await self._to_store("batch_stats")

    # plumbing --------------------------------------------------------------------------
    async def _guard(self, work: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await work()
        except ServiceError as err:
            return _json(err.status, _error(err.message, err.status, err.kind))
        except Exception:  # noqa: BLE001 - logged here; the client gets no traceback
            incident = uuid.uuid4().hex[:12]
            log.exception("memory service error %s", incident)
            return _json(500, _error(f"internal error (incident {incident})", 500, "server_error"))

    def _key(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None

    def _tenant(self, request: Request) -> Tenant:
        key = self._key(request)
        tenant = self.registry.authenticate(key)
        if tenant is not None:
            return tenant
        if self.registry.is_admin(key):
            raise ServiceError(403, "the admin key manages tenants; it cannot read or write memories",
                               "permission_error")
        raise ServiceError(401, "missing or invalid API key (Authorization: Bearer KEY)", "authentication_error")

    def _admin(self, request: Request) -> None:
        key = self._key(request)
        if self.registry.is_admin(key):
            return
        if self.registry.authenticate(key) is not None:
            raise ServiceError(403, "tenant keys cannot manage tenants", "permission_error")
        raise ServiceError(401, "missing or invalid admin key", "authentication_error")

    async def _body(self, request: Request, limit: int | None = None) -> Any:
        declared = request.headers.get("content-length")
        limit = limit or self.cfg.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError(413, f"body of {declared} bytes is over the limit of {limit}", "request_too_large")
        raw = await request.body()
        if len(raw) > limit:
            raise ServiceError(413, f"body of {len(raw)} bytes is over the limit of {limit}", "request_too_large")
        try:
            return json.loads(raw or b"null")
        except ValueError as err:
            raise ServiceError(422, f"body is not valid JSON: {err}") from None

    async def _store(self, tenant: Tenant, op: str, *args: Any) -> tuple[int, Any]:
        if op != "search":
            return await self._to_store("call", tenant.name, tenant.framework, op, *args)
        self._searches += 1
        try:
            return await self._to_store("call", tenant.name, tenant.framework, op, *args, busy=self._searches)
        finally:
            self._searches -= 1

    async def _search(self, tenant: Tenant, query: str, k: int) -> Response:
        self._searches += 1
        try:
            return _encoded(*await self._to_store("search", tenant.name, tenant.framework, query, k,
                                                  busy=self._searches))
        finally:
            self._searches -= 1

    # routes ----------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        return _json(200, {"status": "ok"})

    @api.post("/v1/admin/tenants")
    async def create_tenant(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            self._admin(request)
            body = parse_body(TenantIn, await self._body(request))
            framework = body.framework or self.cfg.memory.name
            self._needs_model(framework)
            key = self.registry.create(body.tenant, framework)
            return _json(201, {"tenant": body.tenant, "framework": framework, "api_key": key})

        return await self._guard(work)

    def _needs_model(self, framework: str) -> None:
        from mnemoray.memory.registry import FRAMEWORKS

        if FRAMEWORKS.spec(framework).built_by_llm and self.model is None:
            raise ServiceError(422, f"field 'framework': {framework!r} needs a memory model; this service has "
                                    "none (set `llm:` in its config)")

    @api.delete("/v1/admin/tenants/{name}")
    async def delete_tenant(self, name: str, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            self._admin(request)
            if self.registry.get(name) is None:
                raise not_found(f"tenant {name!r}")
            self.registry.delete(name)  # first: its key stops working and no retry pass reopens it
            await self._to_store("drop", name)
            return _json(200, {"tenant": name, "deleted": True})

        return await self._guard(work)

    @api.post("/v1/sessions")
    async def add_session(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            tenant = self._tenant(request)
            body = parse_body(SessionIn, await self._body(request))
            status, out = await self._store(tenant, "add_session", body)
            if status == 200 and out["status"] != "done":
                status = 202  # stored, applied later (pending) or given up on (failed)
            return _json(status, out)

        return await self._guard(work)

    @api.get("/v1/sessions/{session_id}")
    async def session_status(self, session_id: str, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return _json(*await self._store(self._tenant(request), "session_status", session_id))

        return await self._guard(work)

    @api.post("/v1/memories/search")
    async def search(self, request: Request) -> Response:
        async def work() -> Response:
            tenant = self._tenant(request)
            body = parse_body(SearchIn, await self._body(request))
            return await self._search(tenant, body.query, body.k)

        return await self._guard(work)

    @api.get("/v1/memories")
    async def list_memories(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            tenant = self._tenant(request)
            offset = _int_param(request, "offset", 0, 0, None)
            limit = _int_param(request, "limit", 100, 1, 1000)
            return _json(*await self._store(tenant, "list_items", offset, limit))

        return await self._guard(work)

    @api.get("/v1/memories/{item_id}")
    async def get_memory(self, item_id: str, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return _json(*await self._store(self._tenant(request), "get", item_id))

        return await self._guard(work)

    @api.delete("/v1/memories/{item_id}")
    async def delete_memory(self, item_id: str, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return _json(*await self._store(self._tenant(request), "delete", item_id))

        return await self._guard(work)

    @api.get("/v1/memories/{item_id}/history")
    async def memory_history(self, item_id: str, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return _json(*await self._store(self._tenant(request), "history", item_id))

        return await self._guard(work)

    @api.get("/v1/export")
    async def export(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return _json(*await self._store(self._tenant(request), "export"))

        return await self._guard(work)

    @api.post("/v1/import")
    async def import_(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            tenant = self._tenant(request)
            body = parse_body(ImportIn, await self._body(request, self.cfg.max_import_bytes))
            return _json(*await self._store(tenant, "import_", body))

        return await self._guard(work)

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            self._tenant(request)
            return _json(200, models_body([self.cfg.model_id] if self.model is not None else []))

        return await self._guard(work)

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            tenant = self._tenant(request)
            body = await self._body(request)
            if not isinstance(body, dict):
                raise ServiceError(422, "body must be a JSON object")
            try:
                asked, chat_request = to_chat_request(body, uuid.uuid4().hex)
            except ProtocolError as err:
                raise ServiceError(422 if err.status == 400 else err.status, str(err)) from None
            if self.model is None:
                raise ServiceError(503, "this service has no chat model (set `llm:` in its config)",
                                   "unavailable_error")
            if asked != self.cfg.model_id:
                raise ServiceError(404, f"model {asked!r} is not served here; available: [{self.cfg.model_id!r}]",
                                   "not_found_error")
            query = next((m.content for m in reversed(chat_request.messages) if m.role == "user"), "")
            memories: list[dict[str, Any]] = []
            if query.strip() and self.cfg.chat.k > 0:
                status, found = await self._store(tenant, "search", query, self.cfg.chat.k)
                if status != 200:
                    return _json(status, found)
                memories = found
            lines = "\n".join(f"- {m['text']}" for m in memories) or "- (none)"
            messages = [ChatMessage(role="system", content=CHAT_SYSTEM.format(memories=lines)),
                        *chat_request.messages]
            params = chat_request.params
            if "max_tokens" not in body and "max_completion_tokens" not in body:
                params = params.model_copy(update={"max_tokens": self.cfg.chat.max_tokens})
            result: ChatResult = await self.model.generate.remote(
                chat_request.model_copy(update={"messages": messages, "params": params}))
            if not result.ok:
                raise ServiceError(502, f"chat model failed: {result.error_kind}: {result.error}", "engine_error")
            answer = to_completion(self.cfg.model_id, result, params.max_tokens)
            answer["mnemoray"] = {"memories": [m["id"] for m in memories]}
            if self.cfg.chat.ingest:
                turns = [{"speaker": m.role, "text": m.content} for m in chat_request.messages if m.role != "system"]
                turns.append({"speaker": "assistant", "text": result.text})
                session = SessionIn.model_validate({"session_id": answer["id"], "turns": turns})
                status, added = await self._store(tenant, "add_session", session)
                answer["mnemoray"]["session"] = added.get("status") if status == 200 else "failed"
            return _json(200, answer)

        return await self._guard(work)


# -- building and running ----------------------------------------------------------------
def _options(settings: DeploymentSettings, access_log: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
        "logging_config": {"enable_access_log": access_log},
    }
    if settings.autoscaling is not None:
        out["autoscaling_config"] = settings.autoscaling.model_dump()
    else:
        out["num_replicas"] = settings.num_replicas
    return out


def engine_config_dict(cfg: MemoryServiceConfig) -> dict[str, Any] | None:
    """The memory model's engine config as plain data (tiny model built here, once)."""
    if cfg.llm is None:
        return None
    from mnemoray.llm.registry import engine_payload

    payload, _ = engine_payload(cfg.llm, cfg.llm_overrides)
    return payload


def build_memory_app(cfg: MemoryServiceConfig) -> Any:
    """The Serve application: ingress (store inside, or -> store) -> encoder (inside the store, or
    -> embedder) (+ memory model)."""
    load_admin_key(cfg.admin_key_file)  # fail here, clearly, rather than in a replica
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"data_dir": Path(cfg.data_dir).resolve()})
    plain = cfg.model_dump(mode="json")
    log_calls = cfg.access_log
    emb = cfg.embedder
    embedder = None
    if emb.placement == "deployment":
        embedder = Embedder.options(**_options(emb.deployment, log_calls)).bind(
            emb.model, emb.device, emb.batching, emb.max_batch_size, emb.batch_wait_timeout_s,
            emb.busy_wait_timeout_s, emb.torch_threads)
    model = None
    engine_cfg = engine_config_dict(cfg)
    if engine_cfg is not None:
        m = cfg.model
        model = MemoryModel.options(**_options(m.deployment, log_calls)).bind(
            engine_cfg, m.batching, m.max_batch_size, m.batch_wait_timeout_s)
    ingress = MemoryIngress.options(**_options(cfg.ingress, log_calls))
    if cfg.store_placement == "ingress":
        return ingress.bind(plain, None, model, embedder)
    store = MemoryStore.options(**_options(cfg.store, log_calls)).bind(plain, embedder, model)
    return ingress.bind(plain, store, model)


def load_service_config(path: str | Path, overrides: list[str] | None = None) -> MemoryServiceConfig:
    return load_config(MemoryServiceConfig, path, overrides)


def check_args(args: dict[str, Any]) -> MemoryServiceConfig:
    """A Serve config file's `args`: `{config: FILE, overrides: [key=value, ...]}`."""
    unknown = set(args) - {"config", "overrides"}
    if unknown or "config" not in args:
        raise ValueError(f"memory app args are {{config: FILE, overrides: [...]}}; got keys {sorted(args)}")
    return load_service_config(args["config"], list(args.get("overrides") or []))


def app_builder(args: dict[str, Any]) -> Any:
    """Entry for `serve run` / `serve deploy` config files (serve/memory_local.yaml)."""
    return build_memory_app(check_args(args))


def running_serve_http() -> tuple[str, int] | None:
    """(host, port) of the Serve instance already running on this cluster, None if there is none:
    a running instance keeps its own HTTP settings, whatever a later `serve.start` asks for."""
    from ray.serve.context import _get_global_client  # Ray 2.60 has no public accessor of these settings
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    http = ServeInstanceDetails(**client.get_serve_details()).http_options
    return ("127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host), http.port


def run_memory_app(cfg: MemoryServiceConfig, name: str = "memory") -> tuple[str, bool]:
    """Deploy (non-blocking); return the base URL and whether Serve was started here. On a
    cluster whose Serve already runs other apps (e.g. a job submitted next to a RayService) the
    app joins it under `/<name>` on that instance's port, and its owner deletes only this app."""
    running = running_serve_http()
    if running is None:
        serve.start(http_options={"host": cfg.host, "port": cfg.port},
                    logging_config={"enable_access_log": cfg.access_log})
        serve.run(build_memory_app(cfg), name=name, route_prefix="/")
        return f"http://{cfg.host}:{cfg.port}", True
    host, port = running
    serve.run(build_memory_app(cfg), name=name, route_prefix=f"/{name}")
    return f"http://{host}:{port}/{name}", False


def stop_memory_app(name: str, started_serve: bool) -> None:
    """Undo `run_memory_app`: shut Serve down if it was started for this app, else delete the app alone."""
    if started_serve:
        serve.shutdown()
    else:
        serve.delete(name)


def serve_memory_until_stopped(cfg: MemoryServiceConfig, address: str | None, ready: Callable[[str], None]) -> None:
    """What `mnemoray serve memory` runs: start (or join) Ray, deploy, call `ready(url)`, block
    until SIGTERM or Ctrl-C, then shut Serve and Ray down (as `serve llm` does)."""
    import ray

    from mnemoray.distributed.runtime import worker_runtime_env

    ray.init(address=address, ignore_reinit_error=True, runtime_env=worker_runtime_env())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after ray.init: see llm_app.serve_until_stopped
    started_serve = True
    try:
        url, started_serve = run_memory_app(cfg)
        ready(url)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop_memory_app("memory", started_serve)
        ray.shutdown()
