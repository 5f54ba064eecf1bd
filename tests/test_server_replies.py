"""What an OpenAI-compatible server can send back that is no chat completion, and secrets in its URL (issue 36)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from judge_helpers import make_run

from emwb.config import load_experiment
from emwb.context import context_of
from emwb.errors import EmwbError
from emwb.judge.loopback import LoopbackJudge
from emwb.judge.stage import run_judge_stage
from emwb.models import openai_http
from emwb.models.openai_http import ChatCompletions, message_text

REPLY = {"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}


class _Server:
    """A server answering every POST with one fixed body; it keeps the headers and paths it was sent."""

    def __init__(self, body: bytes, content_type: str = "application/json"):
        self.seen: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.seen.append((self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()


def _ask(base_url: str) -> list:
    got = []
    ChatCompletions("judge", base_url, 2, 1, 10).run([{"model": "m"}], message_text, lambda i, r: got.append(r))
    return got


def test_an_html_page_is_said_to_be_no_json_with_the_likely_cause():
    page = b"<!DOCTYPE html><html><body>Welcome to our site</body></html>"
    with _Server(page, "text/html; charset=utf-8") as s, pytest.raises(EmwbError) as err:
        _ask(f"http://127.0.0.1:{s.port}")
    msg = str(err.value)
    assert "giving up after 2 tries: the reply body was not JSON (text/html" in msg
    assert "base_url is not the API's root" in msg and "Expecting value" not in msg


def test_a_reply_body_over_the_cap_is_refused_not_held_in_memory(monkeypatch):
    monkeypatch.setattr(openai_http, "MAX_BODY_BYTES", 4096)
    big = json.dumps({**REPLY, "padding": "x" * 10_000}).encode()
    with _Server(big) as s, pytest.raises(EmwbError) as err:
        _ask(f"http://127.0.0.1:{s.port}")
    assert "the reply body is over" in str(err.value)
    with _Server(json.dumps(REPLY).encode()) as s:
        assert _ask(f"http://127.0.0.1:{s.port}")[0]["text"] == "fine"  # a body under the cap is read


def test_credentials_in_a_base_url_are_sent_as_basic_auth_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMWB_TEST_PROXY_PW", "pa:ss w0rd")
    with _Server(json.dumps(REPLY).encode()) as s:
        assert _ask(f"http://me:${{EMWB_TEST_PROXY_PW}}@127.0.0.1:{s.port}/v1")[0]["text"] == "fine"
    path, headers = s.seen[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"me:pa:ss w0rd").decode()
    monkeypatch.delenv("EMWB_TEST_PROXY_PW")
    with pytest.raises(EmwbError, match=r"names \$\{EMWB_TEST_PROXY_PW\}: set EMWB_TEST_PROXY_PW in the environment"):
        _ask(f"http://me:${{EMWB_TEST_PROXY_PW}}@127.0.0.1:{s.port}/v1")


@pytest.mark.parametrize("url", ["https://me:hunter2secret@proxy.example/v1",
                                 "https://proxy.example/v1?api_key=hunter2secret",
                                 "https://proxy.example/v1?x=1&Token=hunter2secret"])
def test_a_secret_written_into_a_url_is_refused_before_anything_is_stored(tmp_path, url):
    exp = {"name": "e", "base_model": "tiny", "judge": {"judges": ["openai/gpt-4o"], "base_url": url}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(EmwbError) as err:
        load_experiment(tmp_path / "e.yaml")
    msg = str(err.value)
    assert "judge.base_url" in msg and "write ${NAME} in its place" in msg and "hunter2secret" not in msg


def test_a_secret_named_in_a_url_reaches_no_file_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EMWB_TEST_PROXY_PW", "hunter2secret")
    with LoopbackJudge() as server:
        url = server.base_url.replace("http://", "http://me:${EMWB_TEST_PROXY_PW}@")
        run = make_run(tmp_path, 6, ["openai/judge-a"], url)
        run_judge_stage(context_of(run))
    assert list(run.dir.glob("judgments/*/*/judgments.jsonl"))
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"hunter2secret" in p.read_bytes()]
