"""``tools/slurm_train.sh`` on a real Slurm cluster: a single-node one on
this machine (munged, slurmctld and slurmd on localhost, CPU only), started
by ``.ci/slurm_cluster.sh``, which installs ``slurm-wlm`` and ``munge`` with
apt-get when they are missing and it runs as root (as on CI).

The job is the tiny ResNet-18 DMCP search with 2 tasks (2 gloo ranks) and
the probe hook of ``tests/helpers/dist_probe.py``, which checks after every
iteration that both ranks hold the same alpha and weights.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO_ROOT, TEST_CONFIGS, free_port
from tests.helpers.search import (
    make_tiny_imagenet,
    run_tool,
    tiny_search_options,
)

CLUSTER = REPO_ROOT / '.ci' / 'slurm_cluster.sh'
PARTITION = os.environ.get('SLURM_CI_PARTITION', 'debug')
SLURM_COMMANDS = ('munged', 'slurmctld', 'slurmd', 'srun')


def _why_no_slurm():
    """Why the cluster cannot run here, or None (CI runs as root)."""
    if os.geteuid() != 0:
        return (
            'the single-node Slurm cluster needs root (its slurmd runs as '
            'root); run as root, where .ci/slurm_cluster.sh also installs '
            'slurm-wlm and munge if missing'
        )
    path = os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin'])
    missing = [c for c in SLURM_COMMANDS if shutil.which(c, path=path) is None]
    if missing and not shutil.which('apt-get'):
        return (
            f'Slurm is not installed ({", ".join(missing)} missing) and there '
            'is no apt-get to install it: install slurm-wlm and munge'
        )
    return None


def _cluster(
    command: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['bash', str(CLUSTER), command],
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture(scope='module')
def slurm_conf():
    """Start the cluster (unless it is up already), yield ``SLURM_CONF``,
    and stop the cluster again if this fixture started it."""
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    was_up = _cluster('status').returncode == 0
    start = _cluster('start', timeout=600)  # apt-get install included
    assert start.returncode == 0, start.stdout + start.stderr
    conf = _cluster('env').stdout.strip().split('=', 1)[1]
    try:
        yield conf
    finally:
        if not was_up:
            stop = _cluster('stop')
            assert stop.returncode == 0, stop.stdout + stop.stderr


@pytest.mark.slow
def test_slurm_train_runs_ddp_search(slurm_conf: str, tmp_path: Path) -> None:
    data_root = make_tiny_imagenet(tmp_path / 'data')
    work_dir = tmp_path / 'work'
    opts = tiny_search_options(data_root, max_epochs=3, warmup_epochs=1)
    proc = run_tool(
        [
            'bash',
            'tools/slurm_train.sh',
            PARTITION,
            'dmcp_tiny',
            str(TEST_CONFIGS / 'dmcp_resnet18_ddp_probe.py'),
            str(work_dir),
            '--cfg-options',
            *opts,
        ],
        env={
            # the tasks inherit srun's environment: this interpreter's
            # `python` (make test does not activate the venv) and the
            # cluster's slurm.conf
            'PATH': os.pathsep.join(
                [os.path.dirname(sys.executable), os.environ.get('PATH', '')]
            ),
            'SLURM_CONF': slurm_conf,
            'GPUS': '2',
            'GPUS_PER_NODE': '0',
            'CPUS_PER_TASK': '1',
            'PORT': str(free_port()),
            'SRUN_ARGS': '--time=10',  # minutes: a hung job cannot linger
        },
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert f'srun -p {PARTITION} --job-name=dmcp_tiny' in log
    assert '--ntasks=2 --cpus-per-task=1' in log
    run_log = next(work_dir.glob('*/*.log')).read_text()
    assert 'Distributed launcher: slurm' in run_log
    assert "'backend': 'gloo'" in run_log

    # the search finished and rank 0 alone wrote its results, once
    assert log.count('Expected Sampling subnet:') == 1
    assert not list(work_dir.rglob('.tmp-*'))
    doc = yaml.safe_load((work_dir / 'DMCP_SUBNET_IMAGENET.yaml').read_text())
    assert doc['meta']['algorithm'] == 'DMCP'
    assert 0 < doc['meta']['flops'] <= doc['meta']['target_flops']
    assert (work_dir / 'epoch_3.pth').is_file()

    # two ranks of one process group, identical after every iteration
    probes = [
        torch.load(work_dir / f'probe_rank{r}.pt', weights_only=False)
        for r in (0, 1)
    ]
    for probe in probes:
        assert len(probe['alpha_diffs']) == 6  # 3 epochs x 2 iterations
        assert max(probe['alpha_diffs']) == 0.0
        assert max(probe['weight_diffs']) == 0.0
    assert torch.equal(probes[0]['alpha'], probes[1]['alpha'])
    assert probes[0]['flops'] == probes[1]['flops']

    # the job is over: nothing left on the cluster once it has completed
    # (srun may return while the job is still COMPLETING)
    deadline = time.monotonic() + 30
    while True:
        queue = subprocess.run(
            ['squeue', '-h', '-p', PARTITION],
            env=dict(os.environ, SLURM_CONF=slurm_conf),
            text=True,
            capture_output=True,
        )
        assert queue.returncode == 0, queue.stderr
        if not queue.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert queue.stdout.strip() == '', queue.stdout
