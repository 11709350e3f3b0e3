"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Everything DMCP writes, the subnet yamls and, through mmengine's local file
backend, the checkpoints, goes to a temporary file in the destination folder
that is flushed, synced and then renamed over the destination, so a crash or
a ``SIGKILL`` leaves either the old file or the new one.

:func:`install_atomic_local_backend` makes mmengine's ``LocalBackend.put`` and
``put_text`` (which ``Runner.save_checkpoint`` uses) write this way; importing
``projects.dmcp`` installs it.
"""

import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

__all__ = ['atomic_write', 'atomic_write_text', 'install_atomic_local_backend']


def atomic_write(
    path: Union[str, Path], data: Union[bytes, str], encoding: str = 'utf-8'
) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path (str | Path): Destination; its folder is created if needed.
        data (bytes | str): Content; text is encoded with ``encoding``.
        encoding (str): Encoding of text. Defaults to 'utf-8'.
    """
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix='.tmp-', suffix=osp.basename(path)
    )
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode(encoding) if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600): give it the permissions a
        # plain open() would, under the process umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write text to ``path`` atomically (UTF-8).

    Args:
        path (str | Path): Destination.
        text (str): Content.
    """
    atomic_write(path, text)


def _put(self, obj: bytes, filepath: Union[str, Path]) -> None:
    atomic_write(filepath, obj)


def _put_text(
    self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8'
) -> None:
    atomic_write(filepath, obj, encoding)


def install_atomic_local_backend() -> bool:
    """Make mmengine's local file backend write atomically.

    Returns:
        bool: True if this call installed it (False if already installed).
    """
    from mmengine.fileio.backends import LocalBackend

    if LocalBackend.put is _put:
        return False
    LocalBackend.put = _put
    LocalBackend.put_text = _put_text
    return True
