"""A small TCP key-value store for start-up, when ranks were started without MPI: global rank 0
serves it at MASTER_ADDR:MASTER_PORT; every rank `set`s and `get`s picklable values by key (`get` waits
for the key, up to a timeout). The NCCL communicator shares its unique ids through it."""
from __future__ import annotations

import pickle
import socket
import socketserver
import struct
import threading
import time


def _send(sock, obj) -> None:
    data = pickle.dumps(obj)
    sock.sendall(struct.pack("!Q", len(data)) + data)


def _recv(sock):
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise ConnectionError("rendezvous: connection closed")
        head += chunk
    (n,) = struct.unpack("!Q", head)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("rendezvous: connection closed")
        buf += chunk
    return pickle.loads(bytes(buf))


class TCPStore:
    def __init__(self, host: str, port: int, is_server: bool, timeout: float = 300.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._server = None
        if is_server:
            data, cond = {}, threading.Condition()

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    while True:
                        try:
                            op, key, value = _recv(self.request)
                        except (ConnectionError, EOFError):
                            return
                        with cond:
                            if op == "set":
                                data[key] = value
                                cond.notify_all()
                                _send(self.request, True)
                            else:
                                cond.wait_for(lambda: key in data, timeout)
                                _send(self.request, data.get(key))

            socketserver.ThreadingTCPServer.allow_reuse_address = True
            self._server = socketserver.ThreadingTCPServer(("", port), Handler)
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._sock = self._connect()

    def _connect(self):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rendezvous: no server at {self.host}:{self.port} after {self.timeout:.0f} s "
                                       "(is rank 0 running, and MASTER_ADDR/MASTER_PORT the same on every rank?)")
                time.sleep(0.1)

    def set(self, key: str, value) -> None:
        _send(self._sock, ("set", key, value))
        _recv(self._sock)

    def get(self, key: str):
        _send(self._sock, ("get", key, None))
        try:
            value = _recv(self._sock)
        except socket.timeout:
            value = None
        if value is None:
            raise TimeoutError(f"rendezvous: key {key!r} not set within {self.timeout:.0f} s (a rank did not start?)")
        return value

    def close(self) -> None:
        self._sock.close()
        if self._server is not None:
            self._server.shutdown()
