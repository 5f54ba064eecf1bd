"""Fetch registered datasets into the local store, verified by sha256 and row count.

Sources, in order: a local mirror directory (`--mirror` or EMWB_DATASET_MIRROR, laid out like the
upstream repository), else `base_url + path` over HTTP(S) (EMWB_DATASET_BASE_URL overrides the pinned
base URL, e.g. for a loopback mirror). Nothing half-downloaded is ever left under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emwb.errors import EmwbError
from emwb.store import file_sha256  # noqa: F401 - used here and by sources
from emwb.yamlio import load_yaml


class Entry(BaseModel):
    """One registered upstream file, pinned by URL (an upstream commit) and sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    base_url: str = Field(description="pinned to an upstream commit; url = base_url + path")
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the file's bytes")
    rows: int = Field(ge=1)
    license: str
    citation: str
    description: str
    content_sha256: str | None = Field(None, description="of the parsed records, each re-serialised with sorted "
                                                         "keys (a copy differing only in JSON escaping verifies)")
    repo: str = ""
    format: Literal["jsonl", "json_prompts", "json_biases", "yaml_questions", "md_biases", "csv_judged"] = "jsonl"
    mirror_path: str | None = Field(None, description="where a mirror folder keeps the file when not at `path` "
                                                      "(../shared/upstream keeps judged answers in responses_judged/)")


REGISTRY_FILE = "registry.yaml"


@cache
def load_registry() -> dict[str, Entry]:
    """The data registry (emwb/catalog/registry.yaml), every entry validated strictly."""
    path = Path(str(resources.files("emwb.catalog") / REGISTRY_FILE))
    raw = load_yaml(path)
    out = {}
    for name, e in (raw.get("datasets") or {}).items():
        try:
            out[name] = Entry(name=name, **e)
        except (ValidationError, TypeError) as exc:
            from emwb.config import format_validation_error

            msg = format_validation_error(exc, str(path), Entry) if isinstance(exc, ValidationError) else str(exc)
            raise EmwbError(msg.replace("'", f"'datasets.{name}.", 1)) from None
    return out


def store_dir() -> Path:
    return Path(os.environ.get("EMWB_DATASETS_DIR", "datasets"))


def content_sha256(path: Path) -> str:
    """sha256 of the parsed records, each re-serialised with sorted keys (independent of JSON escaping)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                h.update(json.dumps(rec, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()


def count_rows(path: Path, fmt: str) -> int | str:
    """Records in a registered file: lines, prompts, biases, or questions (a YAML list)."""
    if fmt == "yaml_questions":
        try:
            data = load_yaml(path)
        except EmwbError:
            return "unreadable"
        return len(data) if isinstance(data, list) else "unreadable"
    if fmt == "csv_judged":
        import csv

        try:
            with open(path, encoding="utf-8", newline="") as fh:
                return sum(1 for _ in csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error):
            return "unreadable"
    if fmt == "md_biases":
        import re

        return len(re.findall(r"(?m)^\d+\. \*\*", path.read_text(encoding="utf-8", errors="replace")))
    if fmt in ("json_prompts", "json_biases"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if fmt == "json_prompts":
                return len(data["prompts"])
            return len(data["train_biases"]) + len(data["test_biases"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return "unreadable"
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def verify(path: Path, entry: Entry) -> None:
    """Raise EmwbError naming the file, expected and actual hash (or row count) when they do not match."""
    actual = file_sha256(path)
    if actual != entry.sha256:
        try:
            content = content_sha256(path) if entry.content_sha256 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            content = None
        if content is None or content != entry.content_sha256:
            raise EmwbError(f"{path}: sha256 mismatch for dataset {entry.name}: expected {entry.sha256}, "
                            f"got {actual}")
    rows = count_rows(path, entry.format)
    if rows != entry.rows:
        raise EmwbError(f"{path}: dataset {entry.name} has {rows} rows, expected {entry.rows}")


class _Retryable(Exception):
    pass


def _download_once(url: str, dest: Path, timeout: float) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name.split(".part")[0]) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise _Retryable(f"connection dropped after {got} of {total} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code < 500 and exc.code != 429:
            raise EmwbError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise _Retryable(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        raise _Retryable(str(exc)) from None


def _download(url: str, dest: Path, retries: int, timeout: float) -> None:
    """Download with retries (exponential backoff) on 5xx, 429, timeouts and dropped connections."""
    from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    try:
        for attempt in Retrying(stop=stop_after_attempt(retries), retry=retry_if_exception_type(_Retryable),
                                wait=wait_exponential(multiplier=0.5, max=10)):
            with attempt:
                _download_once(url, dest, timeout)
    except RetryError as exc:
        raise EmwbError(f"{url}: download failed after {retries} tries ({exc.last_attempt.exception()})") from None


def fetch(name: str, mirror: str | Path | None = None, base_url: str | None = None, store: Path | None = None,
          retries: int = 4, timeout: float = 60.0) -> Path:
    """Make dataset `name` present and verified in the store; return its path (a no-op when present)."""
    registry = load_registry()
    if name not in registry:
        raise EmwbError(f"unknown dataset {name!r}; registered: {', '.join(sorted(registry))}")
    entry = registry[name]
    suffix = {"jsonl": ".jsonl", "yaml_questions": ".yaml", "md_biases": ".md", "csv_judged": ".csv"}.get(entry.format,
                                                                                                  ".json")
    final = (store or store_dir()) / "upstream" / f"{name}{suffix}"
    if final.is_file():
        verify(final, entry)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(f"{final.name}.part-{os.getpid()}")
    mirror = mirror or os.environ.get("EMWB_DATASET_MIRROR")
    try:
        if mirror:
            # The mirror is a copy of the upstream repository, or a folder holding such copies by repo name.
            inside = [entry.path, *([entry.mirror_path] if entry.mirror_path else [])]
            src = next((p for rel in inside for p in (Path(mirror) / rel, Path(mirror) / entry.repo / rel)
                        if p.is_file()), Path(mirror) / entry.path)
            if not src.is_file():
                raise EmwbError(f"{src}: not in the mirror (dataset {name})")
            shutil.copyfile(src, part)
        else:
            base = base_url or os.environ.get("EMWB_DATASET_BASE_URL") or entry.base_url
            _download(base.rstrip("/") + "/" + entry.path, part, retries, timeout)
        verify(part, entry)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, EmwbError):
            raise EmwbError(str(exc).replace(str(part), f"{final} (downloaded copy, removed)")) from None
        raise
    os.replace(part, final)
    return final
