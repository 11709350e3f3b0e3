#!/usr/bin/env bash
# Testing on a Slurm cluster, one task per GPU (or per CPU process).
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# Environment: GPUS (8, total tasks), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun arguments), PORT (rank 0's rendezvous port,
# exported as MASTER_PORT, which mmengine's slurm launcher reads; default
# MASTER_PORT or 29500: give concurrent jobs sharing a node different
# ports). The arguments after the fourth (PY_ARGS) go to tools/test.py.
# srun passes the whole environment to the tasks (--export=ALL): run this
# where `python` is the interpreter to use (e.g. in an activated venv).
# On nodes without GPUs set GPUS_PER_NODE=0: --gres=gpu:N (nothing to
# request; clusters without a gpu GRES reject it) and --ntasks-per-node
# (0 is invalid) are then left out, so srun places the GPUS tasks itself; the
# tasks are CPU processes and tools/test.py uses the gloo backend.

set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${@:5}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
export MASTER_PORT=${PORT:-${MASTER_PORT:-29500}}

if [ "$GPUS_PER_NODE" -gt 0 ]; then
    GPU_ARGS="--gres=gpu:${GPUS_PER_NODE} --ntasks-per-node=${GPUS_PER_NODE}"
else
    GPU_ARGS=""
fi

PYTHONPATH="$TOOLS_DIR/..":$PYTHONPATH \
srun -p ${PARTITION} \
    --job-name=${JOB_NAME} \
    ${GPU_ARGS} \
    --ntasks=${GPUS} \
    --cpus-per-task=${CPUS_PER_TASK} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u "$TOOLS_DIR/test.py" ${CONFIG} ${CHECKPOINT} --launcher="slurm" ${PY_ARGS}
