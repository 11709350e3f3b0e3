"""The model zoo's checksums: ``configs/pruning/dmcp/metafile.yml``.

Each zoo entry with ``Weights`` carries ``Metadata: Weights SHA256`` (the
full sha256 of the file). :func:`zoo_sha256` looks a URL (or a local path
relative to the repository) up there, so that a download whose hash differs
is refused (``projects/dmcp/compat.py: download_checkpoint``).
"""

import os.path as osp
from typing import Dict, Optional

import yaml

__all__ = ['METAFILE', 'zoo_hashes', 'zoo_sha256']

#: The zoo's metafile, beside the configs.
METAFILE = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'configs',
    'pruning',
    'dmcp',
    'metafile.yml',
)
#: The metadata key holding the sha256 of an entry's weights.
SHA256_KEY = 'Weights SHA256'


def zoo_hashes(metafile: str = METAFILE) -> Dict[str, str]:
    """Weights (URL or repository-relative path) -> sha256 of every zoo
    entry that has both.

    Args:
        metafile (str): The metafile. Defaults to the repository's.

    Returns:
        dict[str, str]: Lower-case hex digests by ``Weights``; empty when
        the metafile is missing (an installed package without configs).
    """
    if not osp.isfile(metafile):
        return {}
    with open(metafile, encoding='utf-8') as f:
        doc = yaml.safe_load(f) or {}
    out = {}
    for entry in doc.get('Models') or []:
        weights = entry.get('Weights')
        sha = (entry.get('Metadata') or {}).get(SHA256_KEY)
        if weights and sha:
            out[str(weights)] = str(sha).lower()
    return out


def zoo_sha256(weights: str, metafile: str = METAFILE) -> Optional[str]:
    """The zoo's sha256 of ``weights`` (a URL, or a path under the
    repository root).

    Args:
        weights (str): What a config's ``load_from`` names.
        metafile (str): The metafile. Defaults to the repository's.

    Returns:
        str | None: The hex digest, or None if no zoo entry has it.
    """
    hashes = zoo_hashes(metafile)
    if weights in hashes:
        return hashes[weights]
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(metafile))))
    if osp.exists(weights):
        rel = osp.relpath(osp.abspath(weights), root)
        return hashes.get(rel.replace(osp.sep, '/'))
    return None
