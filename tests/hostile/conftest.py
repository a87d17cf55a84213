from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.llm import ManagedServer, running


@pytest.fixture(scope="session")
def keyed_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real vLLM server over a copy of the tiny model, started with `--api-key`: a request
    without `Authorization: Bearer <key>` gets HTTP 401."""
    tmp = tmp_path_factory.mktemp("keyed")
    model = tmp / "tiny-keyed"
    shutil.copytree(tiny_model, model)
    key = "sk-test-" + secrets.token_hex(12)
    server = ManagedServer(
        model_dir=model,
        served_name="tiny",
        log_path=tmp / "server.log",
        extra_args=["--api-key", key],
    )
    with running([server], 600):
        yield {"url": server.url, "key": key, "env": "DISTILL_TEST_KEY"}
