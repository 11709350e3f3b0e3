"""A local HTTP server for tests that load checkpoints by URL.

:func:`serve_directory` serves one folder on ``127.0.0.1`` (a free port) from
a daemon thread and stops it when the ``with`` block ends; requests time out
after a few seconds, so a test can never hang on it.
"""

import contextlib
import functools
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Union


@dataclass
class Served:
    """A running server.

    Args:
        url (str): Base URL, e.g. ``http://127.0.0.1:40123``.
        requests (list[str]): Paths of the requests answered so far.
    """

    url: str
    requests: List[str] = field(default_factory=list)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files, recording each request instead of logging it."""

    timeout = 10  # seconds a connection may stay idle

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        self.server.served.requests.append(self.path)


@contextlib.contextmanager
def serve_directory(folder: Union[str, Path]) -> Iterator[Served]:
    """Serve ``folder`` over HTTP on 127.0.0.1 while the block runs.

    Args:
        folder (str | Path): The folder to serve.

    Yields:
        Served: The base URL and the requests answered.
    """
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.daemon_threads = True
    server.served = Served(f'http://127.0.0.1:{server.server_address[1]}')
    thread = threading.Thread(
        target=server.serve_forever, kwargs=dict(poll_interval=0.1)
    )
    thread.daemon = True
    thread.start()
    try:
        yield server.served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
