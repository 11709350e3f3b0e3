"""The package's imports follow the flow of DMCP: search -> export -> subnet
file <- retraining, with the shared helpers below all of them, and no module
imports one of ours inside a function (the way to dodge an import cycle).

The rules are read from the source (``ast``), not from a live import, so a
violation is reported even where Python would happen to cope with it.
"""

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / 'projects' / 'dmcp'

# Stage of every module (dotted, relative to projects.dmcp). A module may
# import modules of its own stage or of the stages listed for it.
STAGES: Dict[str, Tuple[str, ...]] = {
    # below everything: shims, files, helpers, registries, dynamic layers,
    # the tracer and the FLOPs counting that search and retraining share
    'shared': (
        'compat',
        'dist',
        'fileio',
        'registry',
        'utils',
        'version',
        'zoo',
        'models.flops',
        'models.layers',
        'models.markov',
        'models.tracer',
    ),
    'search': (
        'models.algorithm',
        'models.bernoulli',
        'models.cost',
        'models.distill',
        'models.losses',
        'models.mutator',
        'models.latency',
        'models.unit',
        'models.wrapper',
        'engine.hooks',
        'engine.loop',
    ),
    'export': ('models.export',),
    'subnet file': (
        'models.subnet_file',
        'models.mmrazor_subnet',
        'models.subnet_checkpoint',
    ),
    'retraining': ('models.prune',),
    # what the tools use: they may import anything
    'entry': (
        '__init__',
        'models.__init__',
        'engine.__init__',
        'checks',
        'cli',
        'deploy',
        'model_config',
        'visualization',
    ),
}
ALLOWED: Dict[str, Tuple[str, ...]] = {
    'shared': ('shared',),
    'search': ('shared', 'search', 'export', 'subnet file'),
    'export': ('shared', 'export', 'subnet file'),
    'subnet file': ('shared', 'subnet file'),
    'retraining': ('shared', 'subnet file', 'retraining'),
    'entry': tuple(STAGES),
}
# Function-level imports of our modules that are not cycle dodges.
LAZY_OK = {
    # compat.py is also loaded on its own, from its file, before anything
    # else (tests/test_compat): outside the package `.zoo` does not resolve.
    ('compat', 'zoo'),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix('')
    return '.'.join(rel.parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _resolve(module: str, node: ast.ImportFrom) -> Set[str]:
    """Our modules an ``ImportFrom`` names (dotted, relative to the
    package), ``'__init__'`` style for packages."""
    known = _modules()
    if node.level:
        base = module.split('.')[: -node.level]
        if module.endswith('__init__'):
            base = module.split('.')[: -node.level]
        target = '.'.join(base + ([node.module] if node.module else []))
    elif (node.module or '').startswith('projects.dmcp'):
        target = node.module[len('projects.dmcp') :].lstrip('.')
    else:
        return set()
    out = set()
    for name in [None] + [a.name for a in node.names]:
        dotted = '.'.join(x for x in (target, name) if x)
        for cand in (dotted, f'{dotted}.__init__' if dotted else '__init__'):
            if cand in known:
                out.add(cand)
                break
    # `from .models import x` names the package when x is not a module
    return out or {f'{target}.__init__' if target else '__init__'}


def _imports(module: str, path: Path) -> Iterator[Tuple[str, bool]]:
    """``(imported module, inside a function)`` for each of our modules."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent

    def in_function(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for target in _resolve(module, node):
                yield target, in_function(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('projects.dmcp'):
                    rest = alias.name[len('projects.dmcp') :].lstrip('.')
                    yield rest or '__init__', in_function(node)


def _stage(module: str) -> str:
    for stage, members in STAGES.items():
        if module in members:
            return stage
    raise AssertionError(
        f'projects/dmcp/{module.replace(".", "/")}.py has no stage in '
        'tests/test_imports.py: add it to STAGES'
    )


def test_every_module_has_a_stage():
    for module in _modules():
        _stage(module)


@pytest.mark.parametrize('module', sorted(_modules()))
def test_imports_follow_the_flow(module: str):
    stage = _stage(module)
    for target, _ in _imports(module, _modules()[module]):
        if target == module:
            continue
        assert _stage(target) in ALLOWED[stage], (
            f'{module} ({stage}) imports {target} ({_stage(target)}): '
            'against the flow search -> export -> subnet file <- retraining'
        )


@pytest.mark.parametrize('module', sorted(_modules()))
def test_no_import_inside_a_function(module: str):
    for target, lazy in _imports(module, _modules()[module]):
        assert not lazy or (module, target) in LAZY_OK, (
            f'{module} imports {target} inside a function'
        )


def test_the_rules_catch_a_violation(tmp_path: Path):
    """The walk sees a late import and a backward one (so the tests above
    can fail)."""
    path = tmp_path / 'prune.py'
    path.write_text(
        'from .algorithm import DMCP\n'
        'def f():\n'
        '    from ..models.export import expected_sampling\n'
    )
    found = list(_imports('models.prune', path))
    assert ('models.algorithm', False) in found
    assert ('models.export', True) in found
    assert _stage('models.algorithm') not in ALLOWED['retraining']
