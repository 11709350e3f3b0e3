"""The subnet yaml: the contract between the search and the retraining.

A subnet file is readable and editable by hand::

    meta:
      algorithm: DMCP
      sampling: expected          # or direct
      target_flops: 2200000000    # MACs
      flops: 2187000000           # this subnet, MACs, at input_shape
      input_shape: [3, 224, 224]
      supernet: configs/pruning/dmcp/dmcp_resnet50_supernet_8xb64_in1k.py
    channels:                     # retained output channels per layer
      backbone.conv1: 51
      backbone.layer1.0.conv1: 38
      ...

``channels`` lists every pruned convolution (and linear) layer by its module
name in the classifier; layers coupled by a residual addition carry the same
value. Files are written atomically (a temporary file, then a rename).
"""

import os
import os.path as osp
import tempfile
from typing import Any, Dict, Optional

import yaml

__all__ = ['dump_subnet', 'atomic_write_text']


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see half a file.

    Args:
        path (str): Destination; its folder is created if needed.
        text (str): Content.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix='.tmp-', suffix=osp.basename(path)
    )
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class _SubnetDumper(yaml.SafeDumper):
    """Writes lists inline (``input_shape: [3, 224, 224]``), mappings as
    blocks (one layer per line)."""


_SubnetDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        'tag:yaml.org,2002:seq', data, flow_style=True
    ),
)


def dump_subnet(
    path: str, channels: Dict[str, int], meta: Optional[Dict[str, Any]] = None
) -> None:
    """Write a subnet yaml atomically.

    Args:
        path (str): Destination file.
        channels (dict[str, int]): Layer name -> retained output channels.
        meta (dict, optional): The ``meta`` section. Defaults to None.
    """
    doc = {
        'meta': dict(meta or {}),
        'channels': {k: int(v) for k, v in channels.items()},
    }
    atomic_write_text(
        path, yaml.dump(doc, Dumper=_SubnetDumper, sort_keys=False)
    )
