"""Fixtures for the remote LLM layer: the fault endpoint and a tiny model folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemoray.llm.fault_server import FaultConfig, FaultServer

@pytest.fixture
def fault_server():
    """Factory: `fault_server(FaultConfig(...))` -> started server, stopped after the test."""
    started: list[FaultServer] = []

    def start(config: FaultConfig | None = None) -> FaultServer:
        server = FaultServer(config or FaultConfig())
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from mnemoray.llm.tiny import ensure_tiny

    return ensure_tiny(tmp_path_factory.mktemp("tiny"))
