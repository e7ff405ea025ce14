"""A moto server on 127.0.0.1 and a free port, for the CLI in another process and the drill."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .redis_server import free_port


@dataclass
class MotoServer:
    """A running ThreadedMotoServer; ``endpoint`` is its URL."""

    server: Any
    port: int

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server thread and close its socket."""
        self.server.stop()


def start_moto(execute_state_machines: bool = True) -> MotoServer:
    """Start moto in this process, bound to loopback; Step Functions really execute when asked."""
    import logging

    from moto.server import ThreadedMotoServer

    from .moto_patches import install as install_moto_patches

    install_moto_patches()  # multi-Region KMS keys (see moto_patches.py)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    # The Step Functions interpreter calls back into moto at localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import requests

    # moto's backends are process-global: start every server from an empty account.
    requests.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=10).raise_for_status()
    if execute_state_machines:
        requests.post(
            f"http://127.0.0.1:{port}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=10,
        ).raise_for_status()
    return MotoServer(server, port)
