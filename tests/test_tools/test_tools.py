"""End-to-end tests of ``tools/``: train, test, distributed (gloo) and Slurm
launch scripts, on the tiny generated image folder."""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

import pytest
import torch

from tests.helpers import (
    REPO_ROOT,
    TINY_CONFIG,
    failure_excerpt,
    free_port,
    load_weights_only,
    tiny_cfg_options,
)

TOOLS = REPO_ROOT / 'tools'


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The current environment without PYTHONPATH (the tools must find the
    repository themselves), with this interpreter's directory first on PATH
    (the scripts run ``python``, as from an activated virtualenv, and
    ``make test`` does not activate one), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    bin_dir = os.path.dirname(sys.executable)
    env['PATH'] = os.pathsep.join([bin_dir, env.get('PATH', '')])
    env.update(extra or {})
    return env


def _run(
    cmd: List[str],
    cwd: Path,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` and return its result with stdout and stderr merged."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _test_tool(
    ckpt: Path, data_root: Path, tmp_path: Path
) -> subprocess.CompletedProcess:
    """``tools/test.py`` on the tiny config and data with ``ckpt``."""
    return _run(
        [sys.executable, str(TOOLS / 'test.py'), str(TINY_CONFIG), str(ckpt)]
        + ['--work-dir', str(tmp_path / 'test')]
        + ['--cfg-options']
        + tiny_cfg_options(data_root),
        cwd=tmp_path,
    )


def _load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` as a module (its ``main`` does not run)."""
    spec = importlib.util.spec_from_file_location(
        f'dmcp_tool_{name}', TOOLS / f'{name}.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def trained(tiny_data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train the tiny config for 2 iterations from a directory outside the
    repository, without ``--work-dir``; return (cwd, checkpoint path)."""
    cwd = tmp_path_factory.mktemp('train_cwd')
    result = _run(
        [sys.executable, str(TOOLS / 'train.py'), str(TINY_CONFIG)]
        + ['--cfg-options']
        + tiny_cfg_options(tiny_data_root),
        cwd=cwd,
    )
    assert result.returncode == 0, failure_excerpt(result.stdout)
    return cwd, result.stdout


def test_train_writes_checkpoint_in_default_work_dir(trained) -> None:
    cwd, log = trained
    work_dir = cwd / 'work_dirs' / 'tiny_resnet18'
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').is_file()
    assert 'Iter(train) [2/2]' in log
    assert 'accuracy/top1' in log  # validation ran at the last iteration
    ckpt = load_weights_only(work_dir / 'iter_2.pth')
    assert ckpt['meta']['iter'] == 2
    assert ckpt['state_dict']['head.fc.weight'].shape == (3, 512)


def test_test_evaluates_checkpoint(
    trained, tiny_data_root: Path, tmp_path: Path
) -> None:
    cwd, _ = trained
    ckpt = cwd / 'work_dirs' / 'tiny_resnet18' / 'iter_2.pth'
    result = _test_tool(ckpt, tiny_data_root, tmp_path)
    assert result.returncode == 0, failure_excerpt(result.stdout)
    assert re.search(r'Load checkpoint from .*iter_2\.pth', result.stdout)
    match = re.search(r'Iter\(test\).*accuracy/top1: ([0-9.]+)', result.stdout)
    assert match, failure_excerpt(result.stdout)
    assert 0.0 <= float(match.group(1)) <= 100.0


@pytest.mark.parametrize('kind', ['pickled object', 'truncated'])
def test_test_refuses_bad_checkpoint_in_one_line(
    kind: str, tiny_data_root: Path, tmp_path: Path
) -> None:
    """A checkpoint that would run code, or a truncated one: one line
    naming the file and the cause, no traceback, nothing evaluated."""
    ckpt = tmp_path / 'bad.pth'
    if kind == 'pickled object':
        torch.save(dict(state_dict={}, meta=argparse.Namespace()), ckpt)
    else:
        torch.save(dict(state_dict={'w': torch.ones(64)}), ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    result = _test_tool(ckpt, tiny_data_root, tmp_path)
    assert result.returncode == 2
    last = result.stdout.strip().splitlines()[-1]
    cause = 'refused: the checkpoint needs argparse.Namespace'
    if kind == 'truncated':
        cause = 'truncated or not a torch checkpoint'
    assert last.startswith(f'test.py: error: {ckpt}: {cause}'), last
    assert 'Traceback' not in result.stdout
    assert 'accuracy/top1' not in result.stdout


def test_amp_on_cpu_fails_clearly(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip('CUDA is available: --amp is supported here')
    result = _run(
        [sys.executable, str(TOOLS / 'train.py'), str(TINY_CONFIG), '--amp'],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert '--amp needs a GPU' in result.stdout
    assert 'Traceback' not in result.stdout
    assert not (tmp_path / 'work_dirs').exists()  # failed before building


@pytest.mark.parametrize(
    'argv, resume, load_from',
    [
        ([], False, None),
        (['--resume'], True, None),  # auto-resume from the work dir
        (['--resume', 'ckpt.pth'], True, 'ckpt.pth'),
    ],
)
def test_train_parse_and_merge_args(
    monkeypatch: pytest.MonkeyPatch,
    argv: List[str],
    resume: bool,
    load_from: Optional[str],
) -> None:
    from mmengine.config import Config

    train = _load_tool('train')
    monkeypatch.setenv('LOCAL_RANK', '0')  # so that the teardown restores
    monkeypatch.delenv('LOCAL_RANK')  # the original state
    monkeypatch.setattr(
        sys,
        'argv',
        ['train.py', str(TINY_CONFIG), '--local-rank', '1', '--work-dir']
        + ['WD', '--cfg-options', 'train_cfg.max_iters=7']
        + argv,
    )
    args = train.parse_args()
    assert os.environ['LOCAL_RANK'] == '1'
    cfg = train.merge_args(Config.fromfile(TINY_CONFIG), args)
    assert cfg.work_dir == 'WD'
    assert cfg.launcher == 'none'
    assert cfg.train_cfg.max_iters == 7
    assert cfg.resume is resume
    assert cfg.load_from == load_from


# mmengine builds torch.cuda.amp.GradScaler, deprecated in torch 2.x.
@pytest.mark.filterwarnings('ignore::FutureWarning')
def test_amp_config_builds_amp_optim_wrappers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmengine.config import Config
    from mmengine.optim import (
        AmpOptimWrapper,
        OptimWrapperDict,
        build_optim_wrapper,
    )

    train = _load_tool('train')
    args = argparse.Namespace(
        config=str(TINY_CONFIG),
        work_dir=None,
        amp=True,
        resume=None,
        cfg_options=None,
        launcher='none',
    )
    cfg = train.merge_args(Config.fromfile(TINY_CONFIG), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.work_dir == os.path.join('./work_dirs', 'tiny_resnet18')

    # OptimWrapperDict style: one AmpOptimWrapper per sub-wrapper.
    sgd = dict(type='SGD', lr=0.1)
    optim_dict = Config(
        dict(
            optim_wrapper=dict(
                constructor='mmrazor.SeparateOptimWrapperConstructor',
                architecture=dict(type='OptimWrapper', optimizer=sgd),
                mutator=dict(optimizer=sgd, loss_scale=512.0),
            )
        )
    ).optim_wrapper
    train.enable_amp(optim_dict)
    assert optim_dict.constructor == 'mmrazor.SeparateOptimWrapperConstructor'
    assert optim_dict.architecture.type == 'AmpOptimWrapper'
    assert optim_dict.architecture.loss_scale == 'dynamic'
    assert optim_dict.mutator.type == 'AmpOptimWrapper'
    assert optim_dict.mutator.loss_scale == 512.0  # kept

    # Both configs build once mmengine's accelerator check is bypassed
    # (on CPU the GradScaler disables itself).
    monkeypatch.setattr(
        'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available',
        lambda: True,
    )
    model = torch.nn.Module()
    model.architecture = torch.nn.Linear(2, 2)
    model.mutator = torch.nn.Linear(2, 1)
    single = build_optim_wrapper(model, cfg.optim_wrapper)
    wrappers = build_optim_wrapper(model, optim_dict)
    assert isinstance(single, AmpOptimWrapper)
    assert isinstance(wrappers, OptimWrapperDict)
    assert all(isinstance(w, AmpOptimWrapper) for w in wrappers.values())


@pytest.mark.slow
def test_dist_train_and_test_two_cpu_processes(
    trained, tiny_data_root: Path, tmp_path: Path
) -> None:
    opts = tiny_cfg_options(tiny_data_root, batch_size=2)
    work_dir = tmp_path / 'dist'
    result = _run(
        ['bash', str(TOOLS / 'dist_train.sh'), str(TINY_CONFIG), '2']
        + ['--work-dir', str(work_dir), '--cfg-options']
        + opts,
        cwd=tmp_path,
        env={'PORT': str(free_port())},
    )
    assert result.returncode == 0, failure_excerpt(result.stdout)
    assert (work_dir / 'iter_2.pth').is_file()
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert "backend='gloo'" in log  # the dumped config

    cwd, _ = trained
    ckpt = cwd / 'work_dirs' / 'tiny_resnet18' / 'iter_2.pth'
    result = _run(
        ['bash', str(TOOLS / 'dist_test.sh'), str(TINY_CONFIG), str(ckpt)]
        + ['2', '--work-dir', str(tmp_path / 'dist_test'), '--cfg-options']
        + opts,
        cwd=tmp_path,
        env={'PORT': str(free_port())},
    )
    assert result.returncode == 0, failure_excerpt(result.stdout)
    assert re.search(r'Iter\(test\).*accuracy/top1', result.stdout)


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh'])
def test_dist_scripts_are_valid_bash(script: str) -> None:
    assert os.access(TOOLS / script, os.X_OK)
    assert _run(['bash', '-n', str(TOOLS / script)], REPO_ROOT).returncode == 0


FAKE_SRUN = """#!/usr/bin/env bash
echo "PYTHONPATH=$PYTHONPATH"
echo "srun $*"
"""


@pytest.mark.parametrize(
    'script, fourth, tool',
    [
        ('slurm_train.sh', 'WORK', 'train.py CFG --work-dir=WORK'),
        ('slurm_test.sh', 'CKPT', 'test.py CFG CKPT'),
    ],
)
@pytest.mark.parametrize('gpus_per_node', ['0', '4'])
def test_slurm_scripts_build_srun_command(
    tmp_path: Path, script: str, fourth: str, tool: str, gpus_per_node: str
) -> None:
    path = TOOLS / script
    assert os.access(path, os.X_OK)
    assert _run(['bash', '-n', str(path)], REPO_ROOT).returncode == 0

    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN)
    (bin_dir / 'srun').chmod(0o755)
    result = _run(
        ['bash', str(path), 'PART', 'JOB', 'CFG', fourth, '--cfg-options']
        + ['a=1'],
        cwd=tmp_path,
        env={
            'PATH': f'{bin_dir}{os.pathsep}{os.environ.get("PATH", "")}',
            'GPUS': '2',
            'GPUS_PER_NODE': gpus_per_node,
            'CPUS_PER_TASK': '1',
            'SRUN_ARGS': '--time=5',
        },
    )
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    pythonpath = next(x for x in lines if x.startswith('PYTHONPATH='))
    roots = [Path(p).resolve() for p in pythonpath[11:].split(':') if p]
    assert REPO_ROOT in roots
    srun = next(x for x in lines if x.startswith('srun '))
    gres = (
        []
        if gpus_per_node == '0'
        else [
            f'--gres=gpu:{gpus_per_node}',
            f'--ntasks-per-node={gpus_per_node}',
        ]
    )
    expected = (
        ['srun', '-p', 'PART', '--job-name=JOB']
        + gres
        + ['--ntasks=2', '--cpus-per-task=1', '--kill-on-bad-exit=1']
        + ['--time=5', 'python', '-u', f'{TOOLS}/{tool.split()[0]}']
        + tool.split()[1:]
        + ['--launcher=slurm', '--cfg-options', 'a=1']
    )
    assert srun.split() == expected
