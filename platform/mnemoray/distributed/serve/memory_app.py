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
- the memory model (only with `llm:`; `memory_model.py`): `MemoryModel` (an engine config's
  engine with `@serve.batch`) or `ServedLLMModel` (ray.serve.llm); LLM-built frameworks call
  it through `HandleEngine`, and `/v1/chat/completions` answers with it.

The store and encoder replicas live in `memory_store.py`; this module holds the ingress and
builds, runs and stops the app. `mnemoray serve memory --config ...` runs it;
`serve/memory_*.yaml` name `app_builder` for `serve run` / `serve deploy`.
"""

# No `from __future__ import annotations`: FastAPI must see real `Request` annotations.
import json
import logging
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from mnemoray.config.base import load_config
from mnemoray.config.service import MemoryServiceConfig
from mnemoray.distributed.serve.memory_model import build_memory_model
from mnemoray.distributed.serve.memory_store import Embedder, MemoryStore, error_body
from mnemoray.llm.openai_protocol import ProtocolError, models_body, to_chat_request, to_completion
from mnemoray.llm.types import ChatMessage, ChatResult
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


# -- HTTP ------------------------------------------------------------------------------
def _json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _encoded(status: int, body: bytes) -> Response:
    """A body the store already encoded as JSON (sent as it is: no decode and encode here)."""
    return Response(content=body, status_code=status, media_type="application/json")


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
            return _json(err.status, error_body(err.message, err.status, err.kind))
        except Exception:  # noqa: BLE001 - logged here; the client gets no traceback
            incident = uuid.uuid4().hex[:12]
            log.exception("memory service error %s", incident)
            return _json(500, error_body(f"internal error (incident {incident})", 500, "server_error"))

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
        embedder = Embedder.options(**emb.deployment.serve_options(log_calls)).bind(
            emb.model, emb.device, emb.batching, emb.max_batch_size, emb.batch_wait_timeout_s,
            emb.busy_wait_timeout_s, emb.torch_threads)
    model = build_memory_model(cfg, log_calls)
    ingress = MemoryIngress.options(**cfg.ingress.serve_options(log_calls))
    if cfg.store_placement == "ingress":
        return ingress.bind(plain, None, model, embedder)
    store = MemoryStore.options(**cfg.store.serve_options(log_calls)).bind(plain, embedder, model)
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
