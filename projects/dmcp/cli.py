"""What every command-line tool shares.

* :func:`entry` wraps a tool's ``main``: a user's mistake (a bad config key,
  a refused checkpoint, a wrong subnet file: the one-line ``ValueError``,
  ``KeyError`` and ``FileNotFoundError`` of our checks) ends in one line on
  stderr, ``<tool>: error: <message>``, and exit code 2, without a traceback;
  ``--debug`` lets the exception through (traceback and all).
* :func:`fail` ends a tool in that one line from the tool itself.
* :func:`runner_parser`, :func:`runner_config` and :func:`run_runner` are the
  parts ``tools/train.py`` and ``tools/test.py`` share: the launcher options,
  the work dir, the config checks, the CPU distributed set-up, building the
  runner and the teardown.
"""

import argparse
import functools
import os
import os.path as osp
import sys
from typing import Any, Callable, List, NoReturn, Optional, Sequence

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checks import ConfigError, check_config
from .dist import setup_cpu_distributed, teardown_distributed

__all__ = [
    'USER_ERRORS',
    'ToolError',
    'entry',
    'fail',
    'parse_runner_args',
    'parser',
    'run_runner',
    'runner_config',
    'runner_parser',
]

#: The exceptions our checks raise for a user's mistake (``ConfigError`` and
#: ``CheckpointLoadError`` are ``ValueError``s).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError)


class ToolError(SystemExit):
    """Ends a tool with exit code 2; ``str()`` is its one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with code 2.

    Args:
        prog (str): The tool's file name (``train.py``).
        message (str): What went wrong, in one line.

    Raises:
        ToolError: Always.
    """
    line = f'{prog}: error: {message}'
    print(line, file=sys.stderr, flush=True)
    raise ToolError(line)


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])  # str(KeyError) quotes its message
    return str(error)


def entry(main: Callable) -> Callable:
    """Decorate a tool's ``main(argv=None)`` so that a user's mistake ends in
    one line and exit code 2 (:func:`fail`) unless ``--debug`` is given.

    Args:
        main (callable): The tool's ``main``; its first argument is the
            command line (None: ``sys.argv[1:]``).

    Returns:
        callable: The wrapped ``main``.
    """
    prog = osp.basename(main.__globals__.get('__file__') or main.__module__)

    @functools.wraps(main)
    def wrapped(argv: Optional[List[str]] = None, *args: Any, **kwargs: Any):
        given = sys.argv[1:] if argv is None else argv
        try:
            return main(argv, *args, **kwargs)
        except USER_ERRORS as e:
            if '--debug' in given:
                raise
            fail(prog, _message(e))

    return wrapped


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--debug`` flag every tool takes.

    Args:
        description (str): The tool's description.

    Returns:
        argparse.ArgumentParser: The parser.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        '--debug',
        action='store_true',
        help='show the traceback of an error instead of one line',
    )
    return p


def runner_parser(
    description: str, config_help: str, cfg_options_example: str
) -> argparse.ArgumentParser:
    """The options ``tools/train.py`` and ``tools/test.py`` share.

    Args:
        description (str): The tool's description.
        config_help (str): Help of the ``config`` argument.
        cfg_options_example (str): An example ``key=value`` for the help of
            ``--cfg-options``.

    Returns:
        argparse.ArgumentParser: The parser; the tool adds its own options
        with :meth:`add_argument` (``--cfg-options`` etc. come first).
    """
    p = parser(description)
    p.add_argument('config', help=config_help)
    p.add_argument('--work-dir', help='the dir to save logs and models')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (e.g. '
        f'{cfg_options_example} or key="[a,b]"); no white space allowed',
    )
    p.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    # torch.distributed.run passes --local-rank (torch.distributed.launch
    # used --local_rank).
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return p


def parse_runner_args(
    p: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
) -> argparse.Namespace:
    """Parse the command line and set ``LOCAL_RANK`` if it is unset.

    Args:
        p (argparse.ArgumentParser): From :func:`runner_parser`.
        argv (Sequence[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def runner_config(cfg: Any, args: argparse.Namespace) -> Any:
    """Set the launcher and the work dir of a config from the command line
    (``--work-dir`` > the config's ``work_dir`` >
    ``./work_dirs/<config stem>``).

    Args:
        cfg (Config): The config loaded from ``args.config``.
        args (argparse.Namespace): The parsed command line.

    Returns:
        Config: ``cfg``, changed in place.
    """
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        stem = osp.splitext(osp.basename(args.config))[0]
        cfg.work_dir = osp.join('./work_dirs', stem)
    return cfg


def run_runner(cfg: Any, config: str, what: str) -> None:
    """Check the config, start the CPU process group if a launcher is set,
    build the runner, run ``runner.<what>()`` and tear the group down.

    Args:
        cfg (Config): The merged config.
        config (str): Its file, for errors.
        what (str): ``'train'`` or ``'test'``.

    Raises:
        ConfigError: The config fails a check (the message names the file).
    """
    try:
        check_config(cfg)
    except ConfigError as e:
        raise ConfigError(f'{config}: {e}') from None
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    getattr(runner, what)()
    teardown_distributed()
