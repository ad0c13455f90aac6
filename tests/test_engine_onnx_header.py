"""Engine: an ONNX file's metadata and graph inputs/outputs, read without onnxruntime, agree
with what onnxruntime reports."""
import os

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine_helpers import conv_model
from inference import ModelError
from inference.model import onnx_header

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "tailings.onnx")


def _ort(path):
    s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return (dict(s.get_modelmeta().custom_metadata_map),
            [(i.name, tuple(d if isinstance(d, int) else (d or None) for d in i.shape)) for i in s.get_inputs()],
            [(o.name, tuple(d if isinstance(d, int) else (d or None) for d in o.shape)) for o in s.get_outputs()])


def _ours(path):
    h = onnx_header.read(path)
    return h.metadata, [(i.name, i.shape) for i in h.inputs], [(o.name, o.shape) for o in h.outputs]


@pytest.mark.parametrize("make", ["shipped", "dynamic", "fixed"])
def test_header_agrees_with_onnxruntime(tmp_path, make):
    if make == "shipped":
        path = SHIPPED
    else:
        path = conv_model(str(tmp_path / "m.onnx"), fixed_hw=64 if make == "fixed" else None)
    assert _ours(path) == _ort(path)


def test_weights_listed_as_inputs_are_not_inputs(tmp_path):
    """IR version 3 graphs list their initializers among the inputs; onnxruntime does not count them."""
    w = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W"], ["output"])], "old",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 3, 1, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    path = str(tmp_path / "ir3.onnx")
    onnx.save(model, path)
    ours = _ours(path)
    assert [n for n, _ in ours[1]] == ["input"]
    assert ours[1] == _ort(path)[1]


@pytest.mark.parametrize("cut", [0, 7, 100, -50])
def test_cut_or_empty_files_are_model_errors(tmp_path, cut):
    data = open(SHIPPED, "rb").read(4000 if cut >= 0 else None)
    path = str(tmp_path / "cut.onnx")
    with open(path, "wb") as f:
        f.write(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        onnx_header.read(path)
