"""Start a real ``hemei serve`` (uvicorn on 127.0.0.1, a free port) for tests.

The probe plugin reaches the server process the way an external plugin
reaches any node: a distribution on ``sys.path`` that declares it in the
``hemei`` entry-point group.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TESTS = Path(__file__).parent


def hemei_command() -> list[str]:
    script = Path(sys.executable).parent / ("hemei.exe" if os.name == "nt" else "hemei")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hemei.cli"]


def probe_site(root: Path, extra: dict[str, str] | None = None, name: str = "site") -> Path:
    """A site directory holding a tiny distribution that declares hook_probe as a hemei plugin.

    ``extra`` adds more test plugins: entry-point name -> file in tests/plugins
    (``{"notices": "notices_v1"}`` installs release 1 of the notices module).
    """
    site = root / name
    dist = site / "hemei_probe-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hemei-probe\nVersion: 0.0.0\n")
    modules = {"hook_probe": "hook_probe", **(extra or {})}
    (dist / "entry_points.txt").write_text("[hemei]\n" + "".join(f"{k} = {v}\n" for k, v in modules.items()))
    for source in modules.values():
        shutil.copy(TESTS / "plugins" / f"{source}.py", site / f"{source}.py")
    return site


def plugin_env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("HEMEI_HOME", None)
    return env


def wrong_clock_env(env: dict, root: Path, shift_s: float) -> dict:
    """``env`` for a process on a PC whose clock reads ``shift_s`` seconds off the true time (< 0: behind).

    A ``sitecustomize`` on ``PYTHONPATH`` shifts ``time.time`` and
    ``time.time_ns`` for the whole process, as a wrongly set PC clock would;
    hemei has no hook of its own for this. ``datetime.now()`` and
    ``date.today()`` read the C clock and are not shifted: a test of a
    module's time-driven work under a wrong clock needs more than this.
    """
    site = root / f"clock{shift_s:+.0f}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import time\n"
        f"_shift_ns = {int(shift_s * 1e9)}\n"
        "_time, _time_ns = time.time, time.time_ns\n"
        "time.time = lambda: _time() + _shift_ns / 1e9\n"
        "time.time_ns = lambda: _time_ns() + _shift_ns\n")
    return dict(env, PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def answer_before_body(url: str, path: str, headers: dict, declared: int) -> bytes:
    """POST a request's headers declaring a body of ``declared`` bytes, send none of it, and return what
    the server answers (b"" if it waited for the body instead: the wait is cut after 30 s)."""
    from urllib.parse import urlsplit

    where = urlsplit(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", f"Content-Length: {declared}",
             *(f"{k}: {v}" for k, v in headers.items())]
    answer = b""
    with socket.create_connection((where.hostname, where.port), timeout=30) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            while chunk := conn.recv(65536):  # the whole answer: its headers and body may come apart
                answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    break
        except TimeoutError:
            pass
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, env: dict, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"serve-{self.port}.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            hemei_command() + ["--home", str(home), "serve", "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hemei serve exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hemei serve did not answer: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
