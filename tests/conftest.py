"""Shared fixtures: offline settings, the tiny local model (built once per session), paths."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
UPSTREAM = SHARED / "upstream"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One tiny model per session: every run (and subprocess) of the suite copies it instead of warming one up.
if "EMWB_BUILD_CACHE" not in os.environ:
    os.environ["EMWB_BUILD_CACHE"] = tempfile.mkdtemp(prefix="emwb-builds-")
    atexit.register(shutil.rmtree, os.environ["EMWB_BUILD_CACHE"], True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from emwb.basemodel import local_build

    out = tmp_path_factory.mktemp("tiny") / "model"
    out.mkdir()
    local_build("tiny", out)
    return out


@pytest.fixture(scope="session")
def upstream() -> Path:
    if not UPSTREAM.is_dir():
        pytest.skip("../shared/upstream is not beside the checkout")
    return UPSTREAM
