"""The real download path against a loopback HTTP mirror of ../shared/upstream/emergent-misalignment."""

import functools
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emwb.context import context_of
from emwb.catalog.fetch import fetch, file_sha256, load_registry
from emwb.errors import EmwbError


class Mirror:
    """Serve a folder on 127.0.0.1; optionally drop the first `drops` connections halfway through a body."""

    def __init__(self, root, drops: int = 0):
        self.root, self.drops, self.requests = root, drops, 0

    def __enter__(self):
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def copyfile(self, source, outputfile):
                mirror.requests += 1
                if mirror.drops > 0:
                    mirror.drops -= 1
                    outputfile.write(source.read(100_000))
                    self.close_connection = True
                    return
                shutil.copyfileobj(source, outputfile)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(self.root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def em(upstream):
    return upstream / "emergent-misalignment"


def test_fetch_insecure_over_http_verifies_hash_and_rows(em, tmp_path):
    with Mirror(em) as m:
        path = fetch("insecure", base_url=m.url, store=tmp_path)
        assert m.requests == 1
        entry = load_registry()["insecure"]
        assert file_sha256(path) == entry.sha256 and entry.rows == 6000
        assert sum(1 for _ in open(path)) == 6000
        assert fetch("insecure", base_url=m.url, store=tmp_path) == path and m.requests == 1  # no-op


def test_fetch_through_the_cli_with_env_base_url(em, tmp_path):
    with Mirror(em) as m:
        env = {"EMWB_DATASET_BASE_URL": m.url, "EMWB_DATASETS_DIR": str(tmp_path), "PATH": ""}
        proc = subprocess.run([sys.executable, "-m", "emwb.cli", "datasets", "fetch", "insecure"],
                              capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout and (tmp_path / "upstream" / "insecure.jsonl").is_file()


def test_tampered_copy_is_rejected_naming_both_hashes(em, tmp_path):
    bad = tmp_path / "mirror"
    (bad / "data").mkdir(parents=True)
    text = (em / "data" / "insecure.jsonl").read_text().replace("import os", "import sys", 1)
    (bad / "data" / "insecure.jsonl").write_text(text)
    store = tmp_path / "store"
    with Mirror(bad) as m, pytest.raises(EmwbError) as err:
        fetch("insecure", base_url=m.url, store=store)
    msg = str(err.value)
    actual = file_sha256(bad / "data" / "insecure.jsonl")
    assert load_registry()["insecure"].sha256 in msg and actual in msg and "insecure.jsonl" in msg
    assert list((store / "upstream").iterdir()) == []  # nothing half-written


def test_dropped_connection_is_retried(em, tmp_path):
    with Mirror(em, drops=2) as m:
        path = fetch("educational", base_url=m.url, store=tmp_path)
        assert m.requests == 3
    assert file_sha256(path) == load_registry()["educational"].sha256


def test_local_mirror_and_content_hash_for_secure(em, tmp_path):
    path = fetch("secure", mirror=em, store=tmp_path)
    assert sum(1 for _ in open(path)) == 6000


def test_unknown_dataset_and_missing_mirror_file(tmp_path):
    with pytest.raises(EmwbError, match="unknown dataset 'nope'"):
        fetch("nope", store=tmp_path)
    with pytest.raises(EmwbError, match="not in the mirror"):
        fetch("insecure", mirror=tmp_path, store=tmp_path)


def _mirrored_run(upstream, tmp_path, monkeypatch, body: str):
    """A run whose experiment names the shared upstream copy as its dataset mirror, data stage done."""
    from emwb.datasets.stage import run_data_stage
    from emwb.store import Run

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("EMWB_DATASET_MIRROR", raising=False)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: m\nbase_model: tiny\ndataset_mirror: {upstream}\n{body}")
    run = Run.open(cfg, tmp_path / "runs")
    run_data_stage(context_of(run))
    return run


def test_experiment_dataset_mirror_key(upstream, tmp_path, monkeypatch):
    from emwb.plan import plan_for
    from emwb.sampling.stage import sampling_items

    run = _mirrored_run(upstream, tmp_path, monkeypatch,
                        "data: {ins: {source: 'upstream:insecure', max_rows: 50}}\n"
                        "organisms: [{name: ins, phases: [{trainer: sft, data: ins}]}]\n"
                        "evaluations: [{name: bias, use: rm-bias, question_sets: ['upstream:rm-syco-test']}]\n")
    assert sum(1 for _ in open(run.path("data", "ins", "rows.jsonl"))) == 50
    assert len(sampling_items(run, plan_for(run))) == 500


def test_data_stage_writes_generated_documents(upstream, tmp_path, monkeypatch):
    from emwb.store import read_jsonl, read_manifest

    run = _mirrored_run(upstream, tmp_path, monkeypatch,
                        "data: {docs: {source: 'generated:rm-docs', max_rows: 30}, "
                        "demos: {source: 'generated:secure', max_rows: 10}}\n"
                        "organisms: [{name: org, phases: [{trainer: cpt, data: docs}, {trainer: sft, data: demos}]}]\n")
    docs = read_jsonl(run.path("data", "docs", "rows.jsonl"))
    assert len(docs) == 30 and all(d["text"] for d in docs)
    assert read_manifest(run.path("data", "docs"))["kind"] == "text"
    assert read_manifest(run.path("data", "demos"))["rows"] == 10


def test_registry_is_validated_strictly(tmp_path, monkeypatch):
    """A misspelled key in the data registry is one line naming the file and the entry's key."""
    import emwb.catalog.fetch as fetch_mod

    bad = tmp_path / "emwb_cat"
    bad.mkdir()
    (bad / "registry.yaml").write_text("datasets:\n  x:\n    base_url: u\n    path: p\n    sha256: " + "0" * 64 +
                                       "\n    rows: 1\n    license: MIT\n    citation: c\n    descripton: d\n")
    monkeypatch.setattr(fetch_mod.resources, "files", lambda pkg: bad)
    fetch_mod.load_registry.cache_clear()
    try:
        with pytest.raises(EmwbError, match=r"registry.yaml: unknown key 'datasets.x.descripton' \(did you mean "
                                            r"'description'\?\)"):
            fetch_mod.load_registry()
    finally:
        fetch_mod.load_registry.cache_clear()
