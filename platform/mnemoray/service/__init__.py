"""The memory service's domain core (no Ray): tenants and their keys, per-tenant durable
memory state in SQLite, ingestion through a registered memory framework with dedup and
retries, and the request/response shapes of the HTTP API.

    tenants.py   tenant names, API keys (shown once, stored hashed), the admin key
    store.py     one SQLite file (WAL) per tenant: sessions, items, history, framework state
    ingest.py    TenantMemory: sessions -> framework ops -> one committed transaction
    schemas.py   request bodies (pydantic) and the error type the API maps to statuses
    codec.py     framework snapshots as JSON (numpy arrays included), never pickle

The Ray Serve app (`mnemoray.distributed.serve.memory_app`) puts these behind HTTP;
docs/ARCHITECTURE.md ("Memory service") describes the whole.
"""
