"""Start and stop a real `python -m llama_cpp.server` on 127.0.0.1 for tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    api_key: str | None
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_llama_server(
    model_path: Path,
    log_path: Path,
    *,
    api_key: str | None = None,
    n_ctx: int = 2048,
    startup_timeout: float = 180.0,
) -> LlamaServer:
    """Start the server and return once GET /v1/models answers; raise with the log if it does not."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--model_alias", "smollm2",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
    ]  # fmt: skip
    if api_key:
        command += ["--api_key", api_key]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = LlamaServer(process=process, port=port, api_key=api_key, log_path=log_path)
    try:
        _wait_until_ready(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: LlamaServer, startup_timeout: float) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"llama_cpp.server exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            response = httpx.get(f"{server.base_url}/models", headers=headers, timeout=2.0)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server did not answer within {startup_timeout:g}s:\n{server.log_tail()}")
