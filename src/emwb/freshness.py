"""Whether a run's finished artifacts are still current: their files match their manifests, and the inputs they
were made from are the run's current artifacts. What `emwb status` shows, what `emwb compare` checks before
reading a report, and what the report stage checks of every artifact it reads (`verified_key`): one rule for all.
"""

from __future__ import annotations

import re
from pathlib import Path

from emwb.config.base import LOCAL_BASE_MODELS
from emwb.errors import EmwbError
from emwb.layout import base_key
from emwb.store import MANIFEST, Run, damage, read_manifest

READ_THROUGH = ("answers",)  # inputs of an input that a reader of it reads too (the report: the judged answers)


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


def is_current(key: str, keys: dict[str, str]) -> bool:
    """An input key is current when it is a finished artifact's key, or (a composite such as an edited variant's
    `<adapter key>+<edit>@<direction key>` or a checkpoint's `<key>@<step>`) every artifact key in it is."""
    if key in keys:
        return True
    found = re.findall(r"[0-9a-f]{64}", key)
    return bool(found) and all(k in keys for k in found)


def command_of(manifest: dict) -> str:
    """The `emwb` command that remakes a finished artifact (its manifest's stage: features-latents -> features)."""
    return str(manifest.get("stage") or "replicate").split("-")[0]


def verified_key(artifact: Path, what: str, command: str, run: Run, made_from: dict[str, str] | None = None) -> str:
    """The key of a finished artifact a stage reads, verified as `emwb status` verifies it: finished, its files
    matching its manifest and (`made_from`: input name -> the run's current key) made from the current inputs;
    else one line naming it and the command (`emwb COMMAND RUN`) that remakes it."""
    m = read_manifest(artifact)
    if m is None:
        raise EmwbError(f"{artifact}: {what} not finished; run `emwb {command} {run.dir}` first")
    why = damage(artifact, m)
    if why:
        raise EmwbError(f"{artifact}: {what} is damaged ({why}); run `emwb {command} {run.dir}` to rebuild it")
    stale = [name for name, key in (made_from or {}).items() if (m.get("inputs") or {}).get(name) != key]
    if stale:
        raise EmwbError(f"{artifact}: {what} is stale (its input {', '.join(stale)} changed since it was made); run "
                        f"`emwb {command} {run.dir}` to redo it")
    return m["key"]


def input_problem(run: Run, manifest: dict, found: dict[Path, tuple[dict, str | None]],
                  keys: dict[str, str] | None = None) -> str | None:
    """Why an artifact made from `manifest`'s inputs cannot be read as current (None: it can): an input (or the
    answers an input was made from, READ_THROUGH) whose files no longer match its manifest, or an input that is no
    longer the run's current artifact (stale)."""
    keys = current_keys(run, found) if keys is None else keys
    by_key = {m.get("key"): (folder, m, why) for folder, (m, why) in found.items() if m}
    inputs = dict(manifest.get("inputs") or {})
    for name, key in list(inputs.items()):  # the answers behind each input, read with it
        hit = by_key.get(key)
        inputs.update({f"{name} ({n})": k for n, k in (hit[1].get("inputs") or {}).items()
                       if n in READ_THROUGH and k} if hit else {})
    stale = []
    for name, key in inputs.items():
        if not key or is_current(key, keys):
            continue
        hit = by_key.get(key)
        if hit and hit[2]:
            return (f"its input {name} is damaged ({hit[0]}: {hit[2]}); run `emwb {command_of(hit[1])} {run.dir}` "
                    "to rebuild it")
        stale.append(name)
    return f"its input {', '.join(stale)} changed since it was made" if stale else None
