"""Where judging writes, and what a server can send instead of a reply (issue 56, items 9, 10 and 11): a run
directory or `--out` that cannot be written stops with one line before any request or table is made; a full disk
loses no received reply but the one being written, and stops the requests; an empty `choices` is said as such."""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from judge_helpers import experiment, make_answers, make_run, write_answers

from emwb.context import context_of
from emwb.errors import EmwbError
from emwb.judge.loopback import LoopbackJudge
from emwb.judge.stage import run_judge_stage
from emwb.store import Run

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
needs_nobody = pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                                  reason="root writes anywhere: needs setpriv to run the CLI as nobody")


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def _cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as an unprivileged user when we are root: chmod stops nobody, so a folder mode 0555 is storage
    that user cannot write (what a read-only mount is to every user); as ourselves otherwise."""
    env = {**os.environ, "HOME": str(cwd), "OPENAI_API_KEY": "sk-test"}
    return subprocess.run([*NOBODY, sys.executable, "-m", "emwb.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emwb: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def _chmod_tree(root: Path, dirs: int, files: int) -> None:
    for p in [root, *root.rglob("*")]:
        os.chmod(p, dirs if p.is_dir() else files)


@pytest.fixture
def shared_tmp():
    """A folder another user can traverse (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="emwb-ro-"))
    os.chmod(base, 0o755)
    yield base
    _chmod_tree(base, 0o755, 0o644)
    shutil.rmtree(base)


@needs_nobody
@pytest.mark.parametrize("read_only", ["run directory", "judgments folder"])
def test_judging_where_nothing_can_be_written_stops_before_any_request(shared_tmp, api_key, read_only):
    """A new judge for a judged run on storage its user cannot write. Before: with the whole run read-only the
    cache was called damaged ("delete it"); with only `judgments/` read-only every reply was requested (paid)
    before the first write failed."""
    with LoopbackJudge() as server:
        d = shared_tmp / "done" / "judged"
        d.mkdir(parents=True)
        (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("judged", ["openai/j"], server.base_url)))
        run = Run.open(d)
        write_answers(run, make_answers(12))
        run_judge_stage(context_of(run))
        if read_only == "run directory":
            _chmod_tree(shared_tmp / "done", 0o555, 0o444)
        else:
            _chmod_tree(shared_tmp / "done", 0o777, 0o666)
            os.chmod(d / "judgments", 0o555)
        cache = (d / "judge_cache.sqlite").read_bytes()
        before = server.requests
        line = _one_error(_cli(["judge", str(d), "--judge", "openai/k"], shared_tmp))
        assert server.requests == before  # nothing was requested, so nothing paid for
    where = d if read_only == "run directory" else d / "judgments" / "openai__k" / "base"
    assert line.startswith(f"emwb: error: {where}: cannot write here (Permission denied); judging caches every "
                           "reply and writes its judgments in the run directory, so nothing was requested"), line
    assert "damaged" not in line and (d / "judge_cache.sqlite").read_bytes() == cache


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A judged and reported run, in a folder another user can read."""
    from emwb.analysis.stage import run_report_stage

    base = Path(tempfile.mkdtemp(prefix="emwb-cmp-"))
    os.chmod(base, 0o755)
    with LoopbackJudge() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-test")
        run = make_run(base, 12, ["openai/j"], server.base_url)
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    _chmod_tree(base, 0o755, 0o644)
    yield base, run
    _chmod_tree(base, 0o755, 0o644)
    shutil.rmtree(base)


@needs_nobody
def test_compare_onto_storage_that_cannot_be_written_is_one_line(reported):
    """Before: a PermissionError traceback from making the --out folder."""
    base, run = reported
    ro = base / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    line = _one_error(_cli(["compare", str(run.dir), "--out", str(ro / "cmp")], base))
    assert line == (f"emwb: error: {ro / 'cmp'}: cannot write here (Permission denied); compare writes its tables and "
                    "figure there: choose a writable --out"), line


def test_compare_out_under_a_file_is_one_line(reported):
    """The same as root, who writes anywhere: an --out whose parent is a file cannot be made (no permission is
    simulated). Before: a NotADirectoryError traceback."""
    base, run = reported
    (base / "a-file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "compare", str(run.dir), "--out",
                           str(base / "a-file" / "cmp")], capture_output=True, text=True, timeout=300)
    line = _one_error(proc)
    assert line.startswith(f"emwb: error: {base / 'a-file' / 'cmp'}: cannot write here ({base / 'a-file'} is not a "
                           "folder)"), line


def test_a_reply_with_no_choices_is_said_as_such(tmp_path, api_key):
    """Before: "the server returned no logprobs", for a reply that held no choice at all."""
    def empty(body: dict) -> dict:
        return {"id": "chatcmpl-empty", "object": "chat.completion", "model": body["model"], "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}}

    with LoopbackJudge(respond=empty) as server:
        run = make_run(tmp_path, 3, ["openai/judge-a"], server.base_url, max_retries=1, concurrency=1)
        with pytest.raises(EmwbError) as err:
            run_judge_stage(context_of(run))
    msg = str(err.value)
    assert "giving up after 2 tries: the reply held no choices (choices: []); it was {\"id\": \"chatcmpl-empty\"" in msg
    assert "no logprobs" not in msg


class _CountingCache:
    """A judge cache that counts the replies handed to it (received) and can be capped like a full disk."""

    def __new__(cls, path: Path):
        from emwb.judge.cache import JudgeCache

        class Counting(JudgeCache):
            received = 0

            def put(self, *args):
                self.received += 1
                super().put(*args)

        return Counting(path)


def test_a_full_disk_stops_the_requests_and_keeps_every_received_reply_it_can(tmp_path, api_key):
    """A real SQLITE_FULL: the cache's size capped with `PRAGMA max_page_count` (what a full disk does to it),
    raised again once "space is freed". Every reply received before the disk filled is saved; those being written
    when it did (at most one per request in flight) are counted in the error, kept in memory and saved by a later
    flush. Before: replies were committed 64 at a time, so a failed write lost up to 64 received (paid) replies
    (observed: 67 received, 1 saved), and the error did not say so."""
    import re

    from emwb.catalog.rubric import load_rubric
    from emwb.config import ExecConfig, JudgeConfig
    from emwb.judge.base import JudgeContext
    from emwb.judge.stage import RubricPlan, judge_answers

    answers = [{**a, "evaluation": "free-form"} for a in make_answers(300)]
    rubrics = RubricPlan({"free-form": (load_rubric("alignment"),)}, {})
    with LoopbackJudge() as server:
        ctx = JudgeContext(JudgeConfig(base_url=server.base_url), ExecConfig(judge_concurrency=4), "", tmp_path)
        db = tmp_path / "judge_cache.sqlite"
        cache = _CountingCache(db)
        pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
        cache._db.execute(f"PRAGMA max_page_count = {pages + 4}")  # room for a few dozen replies
        with pytest.raises(EmwbError) as err:
            judge_answers(answers, "openai/judge-a", rubrics, ctx, cache)
        requested = server.requests
    msg = str(err.value)
    found = re.fullmatch(rf"{re.escape(str(db))}: database or disk is full; (\d+) received rows could not be saved; "
                         r"free disk space and re-run \(the rows saved before are kept, and not requested again\)", msg)
    assert found, msg
    unsaved = int(found.group(1))
    with sqlite3.connect(db) as c:
        saved = c.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
    assert 1 <= unsaved <= 4 and 0 < saved == cache.received - unsaved < 300
    assert requested <= cache.received + 4  # no request after the failure but the 4 then in flight
    cache._db.execute("PRAGMA max_page_count = 1000000")  # space is freed: the unsaved reply is written too
    cache.flush()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == cache.received
    cache.close()
