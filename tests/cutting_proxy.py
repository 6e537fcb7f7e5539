"""A TCP proxy in front of a server that can cut every connection at once and
stop listening: a network path that dies, as a client sees it (the stream
breaks, and nothing answers at that address any more).

Shared by the editor-session, suite and CLI tests. The server and the client
are real; only the bytes between them pass through here, unchanged.
"""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` until :meth:`cut`.

    Args:
        target_port: the server's port.
        cut_after_bytes: if set, cut by itself once this many bytes went from
            the server to the client (over all connections): the client then
            got exactly that prefix of the server's bytes. With fixed-size
            frames this cuts after a known frame, in a client the test does
            not drive (a CLI subprocess).
    """

    def __init__(self, target_port: int, cut_after_bytes: int | None = None):
        self.target = target_port
        self.cut_after_bytes = cut_after_bytes
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.downstream_bytes = 0  # server -> client, forwarded so far
        self.is_cut = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                if self.is_cut.is_set():
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, downstream: bool):
        try:
            while data := a.recv(65536):
                if downstream and self.cut_after_bytes is not None:
                    with self._lock:
                        room = self.cut_after_bytes - self.downstream_bytes
                        data = data[: max(room, 0)]
                        self.downstream_bytes += len(data)
                    if data:
                        b.sendall(data)
                    if len(data) == room or room <= 0:
                        self.cut()
                        return
                    continue
                b.sendall(data)
                if downstream:
                    with self._lock:
                        self.downstream_bytes += len(data)
        except OSError:
            pass

    def cut(self):
        """Every connection is reset and the port stops listening, for good."""
        with self._lock:
            self.is_cut.set()
            sockets, self.sockets = self.sockets, []
        try:  # wakes the thread blocked in accept(); close() alone leaves the port listening
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
