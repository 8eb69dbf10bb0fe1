"""The route table (transports/routes.py): both transports serve exactly the routes it names."""

from __future__ import annotations

from pathlib import Path

from consent_ivr.paths import flows_dir
from consent_ivr.transports.fastagi import FastAgiServer, ServerConfig
from consent_ivr.transports.process_agi import ROUTE_HANDLERS
from consent_ivr.transports.routes import ROUTES
from fastagi_kit import KEY


def test_process_agi_has_a_handler_for_every_route_and_for_nothing_else() -> None:
    assert ROUTE_HANDLERS.keys() == ROUTES.keys()


def test_the_fastagi_server_has_a_handler_for_every_route_and_for_nothing_else(
    tmp_path: Path,
) -> None:
    server = FastAgiServer(ServerConfig(flows_dir(), tmp_path / "evidence.sqlite3"), KEY)
    try:
        assert server.routes.handlers.keys() == ROUTES.keys()
    finally:
        server.routes.track_workers.close()
