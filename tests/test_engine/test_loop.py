"""DMCPTrainLoop: one weight step and one architecture step per iteration
after warmup, no architecture step during warmup."""

import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner

import projects.dmcp  # noqa: F401
from projects.dmcp.engine.loop import check_optim_wrappers
from tests.helpers.search import make_tiny_imagenet, tiny_config


class StepCounter(Hook):
    """Counts optimizer steps per iteration, and alpha's values."""

    def __init__(self):
        self.steps = {'architecture': 0, 'mutator': 0}
        self.per_iter = []

    def before_train(self, runner):
        for key in self.steps:
            optimizer = runner.optim_wrapper[key].optimizer
            optimizer.register_step_post_hook(self._counter(key))

    def _counter(self, key):
        def hook(optimizer, args, kwargs):
            self.steps[key] += 1

        return hook

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._before = dict(self.steps)

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ):
        self.per_iter.append(
            (
                runner.epoch,
                {k: self.steps[k] - self._before[k] for k in self.steps},
                sorted(outputs),
            )
        )


def build_runner(tmp_path, extra=()):
    data = make_tiny_imagenet(tmp_path / 'data')
    cfg = tiny_config(data, max_epochs=3, warmup_epochs=1, extra=list(extra))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    return Runner.from_cfg(cfg)


@pytest.mark.slow
def test_one_step_each_after_warmup(tmp_path):
    runner = build_runner(tmp_path)
    counter = StepCounter()
    runner.register_hook(counter, priority='LOWEST')
    runner.train()
    assert len(counter.per_iter) == 9  # 3 epochs x 3 iterations
    for epoch, steps, keys in counter.per_iter:
        assert steps['architecture'] == 1
        if epoch == 0:  # warmup: stage 1 only
            assert steps['mutator'] == 0
            assert not any(k.startswith('arch.') for k in keys)
        else:
            assert steps['mutator'] == 1
            assert {'arch.loss_cls', 'arch.loss_reg'} <= set(keys)
        assert {'max.loss', 'min.loss', 'direct0.loss', 'direct1.loss'} <= set(
            keys
        )


def test_alpha_weight_decay_is_refused(tmp_path):
    runner = build_runner(
        tmp_path, ['optim_wrapper.mutator.optimizer.weight_decay=0.0001']
    )
    with pytest.raises(ValueError, match='weight_decay must be 0'):
        runner.train()


def test_missing_optimizer_is_refused(tmp_path):
    class Fake:
        optim_wrappers = {'architecture': None}

    with pytest.raises(KeyError, match=r"missing \['mutator'\]"):
        check_optim_wrappers(Fake())


def test_warmup_longer_than_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match='warmup_epochs'):
        build_runner(tmp_path, ['train_cfg.warmup_epochs=5']).train()
