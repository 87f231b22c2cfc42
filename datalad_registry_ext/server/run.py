"""Running the server: bind the port, run uvicorn until a signal.

:func:`serve` is what ``registry-serve`` runs. It yields result-shaped
outcomes as they happen: one when the server listens (with its URL), one
when it has stopped (Ctrl-C or SIGTERM: requests under way finish, the
submission worker stops after its current registration). It binds the
socket itself, before anything starts, so that a port in use is an error
naming the port rather than uvicorn's exit.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Iterator

import uvicorn

from datalad_registry_ext import search
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.server import create_app

lgr = logging.getLogger("datalad.registry_ext.server")

ACTION = "registry_serve"
#: how long requests under way may take to finish once asked to stop
GRACEFUL_SECONDS = 5


class _Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGINT and SIGTERM without re-raising
    the signal afterwards (uvicorn does, to end the process as the signal
    would): the command reports the stop as its last result and exits 0."""

    stop_signal: int | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        originals = {sig: signal.signal(sig, self._stop)
                     for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _stop(self, sig, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait
        self.stop_signal = sig
        self.should_exit = True
        queue = getattr(self.config.app.state, "submissions", None)
        if queue is not None:
            queue.stopping()


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    # the protocol must say TCP: asyncio sets TCP_NODELAY only on sockets
    # that do, and without it every keep-alive response waits ~40 ms for
    # the client's delayed ACK (headers and body are written separately)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        # a restart must not wait for connections in TIME_WAIT; another
        # listening socket still makes bind() fail
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(location: Path, *, host: str = "127.0.0.1", port: int = 5000,
          allow_submit: bool = False,
          update_every: float | None = None) -> Iterator[dict]:
    """Serve the registry at ``location`` until SIGINT/SIGTERM; with
    ``update_every`` (seconds), run registry-update that often meanwhile."""
    location = Path(location)
    base = {"action": ACTION, "path": str(location), "type": "dataset"}
    try:
        search.require_registry(location)
    except RegistryExtError as e:
        yield dict(base, status=getattr(e, "status", "error"),
                   message=str(e))
        return
    try:
        sock = _bind(host, port)
    except socket.gaierror as e:
        yield dict(base, status="error", host=host, port=port,
                   message=f"cannot serve on {host}: {e.strerror}")
        return
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            message = (f"port {port} on {host} is in use (another server?); "
                       "choose another with --port")
        elif e.errno == errno.EACCES:
            message = (f"not allowed to listen on port {port} (ports below "
                       "1024 need privileges); choose another with --port")
        else:
            message = f"cannot listen on {host} port {port}: {e.strerror}"
        yield dict(base, status="error", host=host, port=port,
                   message=message)
        return
    with sock:
        port = sock.getsockname()[1]
        url = _url(host, port)
        app = create_app(location, allow_submit=allow_submit,
                         update_every=update_every)
        server = _Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False))
        mode = "accepting submissions" if allow_submit else "read-only"
        if update_every:
            mode += f", updating every {update_every:g} s"
        yield dict(base, status="ok", url=url, host=host, port=port,
                   allow_submit=allow_submit, update_every=update_every,
                   message=f"serving {location} at {url} ({mode}); "
                           "Ctrl-C stops it")
        server.run(sockets=[sock])
    if not server.started:
        # uvicorn logged why (the application failed to start)
        yield dict(base, status="error", url=url,
                   message=f"the server at {url} failed to start")
        return
    how = signal.Signals(server.stop_signal).name if server.stop_signal \
        else "shutdown"
    yield dict(base, status="ok", url=url, stopped=how,
               message=f"stopped serving {location} at {url} ({how})")
