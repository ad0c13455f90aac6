"""The user's models managed: rename, export as one file, import, delete; shipped ones untouched."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

from engine_helpers import conv_model
from inference.model import user_models
from inference import list_models, open_model
from inference.errors import ModelError
from inference.model.registry import SHIPPED_DIR


@pytest.fixture
def user(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("TAILINGS_MAPPER_MODELS", str(d))
    path = conv_model(str(d / "mine.onnx"))
    with open(d / "mine.md", "w") as fh:
        fh.write("# Model card: `mine`\n\n**In short:** a test model.\n")
    return d, path


def _outputs(path):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_list_rename_export_import_delete(user, tmp_path):
    d, path = user
    ref = _outputs(path)
    listed = {m.name: m for m in list_models()}
    assert listed["mine"].classes == ["background", "tailings"] and not listed["mine"].shipped
    assert listed["tailings"].shipped and listed["tailings"].score == "IoU 0.51"
    new = user_models.rename(path, "pond finder")
    assert new == str(d / "pond finder.onnx") and not os.path.exists(path) and not os.path.exists(d / "mine.md")
    assert open_model(new).info.name == "pond finder"
    assert "`pond finder`" in open(d / "pond finder.md").read()
    np.testing.assert_array_equal(_outputs(new), ref)           # the network untouched
    shared = user_models.export(new, str(tmp_path / "to_a_colleague.onnx"))
    assert user_models.embedded_card(shared).startswith("# Model card: `pond finder`")
    np.testing.assert_array_equal(_outputs(shared), ref)
    with pytest.raises(ModelError, match="exists already"):
        conv_model(str(d / "other.onnx"))
        user_models.rename(str(d / "other.onnx"), "pond finder")
    user_models.delete(new)
    assert not os.path.exists(new) and not os.path.exists(d / "pond finder.md")
    back = user_models.import_model(shared)
    assert open(os.path.splitext(back)[0] + ".md").read().startswith("# Model card: `pond finder`")


def test_shipped_models_and_bad_names_are_refused(user):
    d, path = user
    with pytest.raises(ModelError, match="shipped models are not changed"):
        user_models.delete(os.path.join(SHIPPED_DIR, "tailings.onnx"))
    with pytest.raises(ModelError, match="shipped models are not changed"):
        user_models.rename(os.path.join(SHIPPED_DIR, "tailings.onnx"), "x")
    with pytest.raises(ModelError, match="a model name is"):
        user_models.rename(path, "../escape")
    assert os.path.isfile(os.path.join(SHIPPED_DIR, "tailings.onnx"))
