"""benchmarks/search_quality.py: ``--variant`` parsing, folder names and the
table's rows (the figures themselves are measured by running it)."""

import pytest

from benchmarks.search_quality import (
    arm_dirs,
    arms,
    parse_variants,
    row_labels,
)


def test_variants_keep_the_old_names_and_add_their_own():
    variants = parse_variants(
        [['dmcp'], ['paper', 'model.budget_mode=paper', 'a.b=1']]
    )
    assert variants == {
        'dmcp': [],
        'paper': ['model.budget_mode=paper', 'a.b=1'],
    }
    # the default variant reuses the folders of runs made before variants
    assert arm_dirs('dmcp') == ('dmcp', 'uniform_matched', 'search', 'matched')
    assert arm_dirs('paper') == (
        'dmcp_paper',
        'uniform_matched_paper',
        'search_paper',
        'matched_paper',
    )
    assert arms(variants) == [
        'uniform',
        'dmcp',
        'uniform_matched',
        'dmcp_paper',
        'uniform_matched_paper',
    ]
    keys = [key for key, _ in row_labels(variants)]
    assert keys == [
        'dmcp',
        'uniform',
        'uniform_matched',
        'dmcp_paper',
        'uniform_matched_paper',
    ]
    assert '`model.budget_mode=paper`' in row_labels(variants)[3][1]


@pytest.mark.parametrize(
    'specs, message',
    [
        ([['dmcp'], ['dmcp']], 'repeated name'),
        ([['a/b']], 'bad or repeated name'),
        ([['paper', 'model.budget_mode']], 'not KEY=VALUE'),
    ],
)
def test_bad_variants_are_refused_in_one_line(specs, message):
    with pytest.raises(SystemExit, match=message):
        parse_variants(specs)
