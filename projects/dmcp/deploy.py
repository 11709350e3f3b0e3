"""A pruned classifier as ONNX, checked with onnxruntime.

:func:`onnx_bytes` exports a classifier's logits (``mode='tensor'``: the
input is the data preprocessor's output, normalised images) as an ONNX
model with a dynamic batch axis; :func:`onnx_session` opens such a model in
onnxruntime on the CPU and :func:`onnx_max_diff` compares its logits with
torch's. ``onnx`` and ``onnxruntime`` (``requirements/tests.txt``) are
imported only when these are called.

The exporter is torch's TorchScript-based one (``dynamo=False``): the
``torch.export`` one needs ``onnxscript``, which this repository does not
install.
"""

import io
import json
import warnings
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from .utils import tensor_forward

__all__ = ['MIN_OPSET', 'onnx_bytes', 'onnx_max_diff', 'onnx_session']

#: The oldest ONNX opset the export accepts.
MIN_OPSET = 17


class _Logits(nn.Module):
    """A classifier's raw output as a plain ``forward(x)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return tensor_forward(self.model, x)


def onnx_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    opset: int = MIN_OPSET,
    metadata: Optional[Dict[str, Any]] = None,
) -> bytes:
    """Export a classifier (in eval mode) to ONNX.

    Args:
        model (nn.Module): The classifier; exported on its device.
        input_shape (Sequence[int]): ``(C, H, W)`` of one input.
        opset (int): The ONNX opset. Defaults to 17 (:data:`MIN_OPSET`).
        metadata (dict, optional): Written to the model's
            ``metadata_props`` (values that are not strings as JSON).
            Defaults to None.

    Returns:
        bytes: The ONNX model; input ``input`` ``(N, C, H, W)``, output
        ``logits`` ``(N, num_classes)``.

    Raises:
        ValueError: ``opset`` is below :data:`MIN_OPSET`.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f'opset: {opset} is below {MIN_OPSET}')
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dummy = torch.zeros(1, *input_shape, device=device)
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the legacy exporter's notices
            torch.onnx.export(
                _Logits(model),
                (dummy,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=['input'],
                output_names=['logits'],
                dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = str(key)
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_session(data: bytes, threads: Optional[int] = None) -> Any:
    """Open an ONNX model in onnxruntime on the CPU.

    Args:
        data (bytes): The ONNX model.
        threads (int, optional): Intra-op threads. Defaults to None
            (onnxruntime's choice).

    Returns:
        onnxruntime.InferenceSession: The session.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        data, options, providers=['CPUExecutionProvider']
    )


def onnx_max_diff(data: bytes, model: nn.Module, inputs: Tensor) -> float:
    """Largest absolute difference between the ONNX model's logits (in
    onnxruntime on the CPU) and the torch model's on ``inputs``.

    Args:
        data (bytes): The ONNX model of ``model``.
        model (nn.Module): The classifier (put in eval mode).
        inputs (Tensor): A batch ``(N, C, H, W)`` on the model's device.

    Returns:
        float: ``max |logits_onnx - logits_torch|``.
    """
    model.eval()
    with torch.no_grad():
        expected = tensor_forward(model, inputs).float().cpu()
    session = onnx_session(data)
    (got,) = session.run(['logits'], {'input': inputs.float().cpu().numpy()})
    return float((torch.from_numpy(got) - expected).abs().max())
