"""A TCP proxy on 127.0.0.1 that cuts every connection after a number of bytes, or paces it.

Used to test sync over a link that drops mid-transfer: bytes flow both ways
unchanged until ``cut_after`` bytes have gone from client to server, then
both sockets are closed abruptly (RST where the platform allows it). With
``bytes_per_s``, each direction is slowed to about that rate (a slow link).
"""

from __future__ import annotations

import socket
import struct
import threading
import time


class CuttingProxy:
    def __init__(self, target_port: int, cut_after: int | None, bytes_per_s: float | None = None):
        self.target_port = target_port
        self.cut_after = cut_after
        self.bytes_per_s = bytes_per_s
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cuts = 0
        self._stop = False
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, upstream]
            sent = [0]
            threading.Thread(target=self._pipe, args=(client, upstream, sent, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, sent, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, sent: list[int], counted: bool) -> None:
        try:
            while True:
                data = src.recv(65536 if self.bytes_per_s is None else 256)
                if not data:
                    break
                if self.bytes_per_s is not None:
                    time.sleep(len(data) / self.bytes_per_s)
                if counted and self.cut_after is not None and sent[0] + len(data) > self.cut_after:
                    dst.sendall(data[: max(0, self.cut_after - sent[0])])
                    self.cuts += 1
                    self._reset(src, dst)
                    return
                if counted:
                    sent[0] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _reset(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread blocked in recv on it
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._reset(*self._open)
