"""The supervisor's clients (``supervisor.py``; standard library only, imported from its
directory): accepting agents on its socket (the same uid only), reading their commands, and
queueing its events for them, sent once per pass of its loop (:meth:`ClientIO.flush_all`);
a frozen agent's backlog waits in its buffer (the supervisor never blocks on a client)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct

_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every event


class ClientIO:
    """Mixed into ``Supervisor``, which holds these attributes and handles each command
    (``handle``) and what to keep once nobody is connected (``persist``)."""

    listener: socket.socket
    sel: selectors.BaseSelector
    clients: dict[socket.socket, list[bytearray]]  # -> [input, output]
    unsent: set[socket.socket]  # clients with output queued by this pass
    writing: set[socket.socket]  # clients registered for EVENT_WRITE
    done: dict[str, dict]
    accepted: bool

    def handle(self, conn: socket.socket, msg: dict) -> None:
        raise NotImplementedError

    def persist(self, key: str) -> None:
        raise NotImplementedError

    def accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            conn, _ = self.listener.accept()
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.geteuid():
                conn.close()
                return
            conn.setblocking(False)
            self.accepted = True
            self.clients[conn] = [bytearray(), bytearray()]
            self.sel.register(conn, selectors.EVENT_READ, ("client", conn))

    def drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        del self.clients[conn]
        self.writing.discard(conn)
        conn.close()
        if not self.clients:  # nobody to tell: what ended is kept on disk too
            for key in list(self.done):
                self.persist(key)

    def read_client(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.drop(conn)
            return
        buf = self.clients[conn][0]
        buf += chunk
        *lines, rest = buf.split(b"\n")
        buf[:] = rest
        for line in lines:
            try:
                msg = json.loads(line)
                self.handle(conn, msg)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.send(conn, {"ev": "error", "error": f"{type(exc).__name__}: {exc}"})

    def send(self, conn: socket.socket, msg: dict) -> None:
        """Queue ``msg`` for ``conn``: what a pass of the loop queued goes out at its end
        (:meth:`flush_all`), in one write, which the agent reads at once."""
        out = self.clients[conn][1]
        out += _json(msg).encode() + b"\n"
        self.unsent.add(conn)

    def flush_all(self) -> None:
        """Send what this pass queued (called once per pass of the loop)."""
        for conn in self.unsent:
            if conn in self.clients:
                self.flush(conn)
        self.unsent.clear()

    def broadcast(self, msg: dict) -> None:
        for conn in list(self.clients):
            self.send(conn, msg)

    def flush(self, conn: socket.socket) -> None:
        """Send what the client's buffer holds; a frozen agent's backlog waits here (the
        supervisor never blocks on a client)."""
        out = self.clients[conn][1]
        try:
            while out:
                del out[: conn.send(out)]
        except BlockingIOError:
            pass
        except OSError:
            self.drop(conn)
            return
        if bool(out) != (conn in self.writing):  # the write interest changes: tell epoll
            self.writing.symmetric_difference_update((conn,))
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            self.sel.modify(conn, events, ("client", conn))
