"""Whether a run's finished artifacts are still current: their files match their manifests, and the inputs they
were made from are the run's current artifacts. What `emwb status` shows and `emwb compare` checks before reading.
"""

from __future__ import annotations

import re
from pathlib import Path

from emwb.config.base import LOCAL_BASE_MODELS
from emwb.layout import base_key
from emwb.store import MANIFEST, Run, damage, read_manifest


def finished(run: Run) -> dict[Path, tuple[dict, str | None]]:
    """Every finished artifact of the run, each read and checked once: folder -> (its manifest, why its files no
    longer match it, or None)."""
    out = {}
    for path in run.dir.rglob(MANIFEST):
        if ".partial" in path.parts:
            continue
        m = read_manifest(path.parent)
        if m is not None:
            out[path.parent] = (m, damage(path.parent, m))
    return out


def current_keys(run: Run, found: dict[Path, tuple[dict, str | None]]) -> dict[str, str]:
    """key -> what it is, for every finished artifact (`finished(run)`) whose files still match its manifest."""
    out = {m["key"]: str(folder.relative_to(run.dir)) for folder, (m, why) in found.items()
           if m and m.get("key") and why is None}
    if run.exp.base_model not in LOCAL_BASE_MODELS:  # a named base model is an input with no artifact of its own
        out[base_key(run)] = f"base model {run.exp.base_model}"
    return out


def changed_inputs(manifest: dict, keys: dict[str, str]) -> list[str]:
    """The inputs of a finished artifact that are no longer the run's current artifacts (it is stale)."""
    return [name for name, k in (manifest.get("inputs") or {}).items() if k and not is_current(k, keys)]


def is_current(key: str, keys: dict[str, str]) -> bool:
    """An input key is current when it is a finished artifact's key, or (a composite such as an edited variant's
    `<adapter key>+<edit>@<direction key>` or a checkpoint's `<key>@<step>`) every artifact key in it is."""
    if key in keys:
        return True
    found = re.findall(r"[0-9a-f]{64}", key)
    return bool(found) and all(k in keys for k in found)
