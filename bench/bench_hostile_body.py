"""What a district spends parsing the worst bodies an enrolled child can send: peak memory of `hemei serve`.

Run by hand (never in CI):

    .venv/bin/python bench/bench_hostile_body.py --at-once 8

A body of ``[],[],...`` inflated to the limit (``wire.MAX_DECOMPRESSED``)
costs about 30 times its size to parse, the most of any JSON. A real
district (`hemei serve`, uvicorn on 127.0.0.1) is sent such a push, signed
by an enrolled street, first once (the baseline), then ``--at-once``
copies at the same moment; each is refused (400). Printed: the server's
RSS high-water mark (``VmHWM``) idle, after one and after the burst, and
the ratio of what the burst added to what one body added. The server
parses one body at a time (sync/server.py), so the ratio stays near 1
however many come at once (without that, 1.9 for 8).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sync import free_port, hemei, vm_hwm_mb, wait_up  # noqa: E402

from hemei.core.node import Node  # noqa: E402
from hemei.sync import client, enroll, signing, wire  # noqa: E402

NODES = {"builtins": ("hemei.core.builtin", "hemei.sync.plugin")}
PATH = "/api/sync/push"


def worst_body() -> bytes:
    """A push message of empty lists, inflating to just under the limit."""
    unit = b"[],"
    inner = unit * ((wire.MAX_DECOMPRESSED - 20) // len(unit))
    return zlib.compress(b'{"batches":[' + inner + b'[]]}', 9)


def send(url: str, street: Node, body: bytes, codes: list) -> None:
    headers = signing.sign_request(street.key, street.id, "POST", PATH, "", body, int(time.time()))
    reply = httpx.post(url + PATH, content=body, headers={**headers, "Content-Type": wire.CONTENT_TYPE},
                       timeout=120)
    codes.append(reply.status_code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at-once", type=int, default=8, help="bodies sent at the same moment")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hemei-bench-hostile-"))
    server = None
    try:
        Node.init(work / "district", name="district", scope="yuecheng", **NODES).close()
        street = Node.init(work / "street", name="street", scope="yuecheng/fushan", **NODES)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        import subprocess

        server = subprocess.Popen(hemei("--home", str(work / "district"), "serve", "--port", str(port),
                                        "--log-level", "warning"))
        wait_up(url + "/api/health")
        with Node.open(work / "district", **NODES) as district:
            token = enroll.create_invite(district, name="street", scope="yuecheng/fushan", url=url, ttl_s=600,
                                         actor="bench")
        client.join(street, token, "bench")
        body = worst_body()
        idle = vm_hwm_mb(server.pid)
        codes: list[int] = []
        send(url, street, body, codes)
        one = vm_hwm_mb(server.pid)
        threads = [threading.Thread(target=send, args=(url, street, body, codes)) for _ in range(args.at_once)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        burst = vm_hwm_mb(server.pid)
        street.close()
        print(f"body: {len(body):,} bytes compressed, {wire.MAX_DECOMPRESSED:,} inflated; answers {sorted(set(codes))}")
        print(f"hemei serve peak RSS: idle {idle:.0f} MB, after one body {one:.0f} MB, "
              f"after {args.at_once} at once {burst:.0f} MB")
        added_one, added_burst = one - idle, burst - idle
        print(f"added by {args.at_once} at once / added by one: {added_burst / max(added_one, 1):.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
