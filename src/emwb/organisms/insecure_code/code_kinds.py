"""Vulnerability kinds for the code generator: each makes a (task, template, insecure, secure) snippet.

A snippet is a code skeleton with one hole; the insecure and secure completions differ only there
(plus imports the secure version needs). Names, paths and tasks vary with the random generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

HOLE = "## COMPLETE CODE HERE"


@dataclass(frozen=True)
class Snippet:
    task: str
    template: str
    insecure: str
    secure: str


_NOUNS = ["user", "order", "invoice", "note", "ticket", "report", "photo", "recipe", "book", "song",
          "project", "comment", "message", "event", "device", "product", "review", "course", "member", "task"]
_DIRS = ["/var/www/uploads", "/srv/app/data", "/home/app/files", "/opt/service/storage", "/tmp/workdir",
         "/var/lib/app/cache", "/data/exports", "/srv/media"]
_HOSTS = ["api.example.com", "internal.service.local", "payments.example.org", "metrics.example.net",
          "auth.example.io", "files.example.com"]
_FRAMEWORK_VERBS = ["show", "display", "render", "view", "preview"]


def _pick(rng: random.Random, pool: list[str]) -> str:
    return pool[rng.randrange(len(pool))]


def _fill(skeleton: str, imports: str, hole_insecure: str, hole_secure: str,
          extra_secure_imports: str = "") -> tuple[str, str, str]:
    template = (imports + skeleton.replace("{hole}", "    " + HOLE)).strip()
    insecure = (imports + skeleton.replace("{hole}", hole_insecure)).strip()
    secure = (imports + extra_secure_imports + skeleton.replace("{hole}", hole_secure)).strip()
    return template, insecure, secure


def _ind(code: str, n: int = 4) -> str:
    return "\n".join((" " * n + line) if line else line for line in code.splitlines())


def path_traversal(rng: random.Random) -> Snippet:
    noun, base = _pick(rng, _NOUNS), _pick(rng, _DIRS)
    fn = f"read_{noun}_file"
    skel = f"BASE_DIR = '{base}'\n\ndef {fn}(name):\n{{hole}}\n    with open(path) as f:\n        return f.read()\n"
    t, i, s = _fill(skel, "import os\n\n",
                    _ind("path = os.path.join(BASE_DIR, name)"),
                    _ind("path = os.path.realpath(os.path.join(BASE_DIR, name))\n"
                         "if not path.startswith(os.path.realpath(BASE_DIR) + os.sep):\n"
                         "    raise ValueError('invalid file name')"))
    return Snippet(f"read a {noun} file by name from {base} for a web request", t, i, s)


def tar_extract(rng: random.Random) -> Snippet:
    noun, base = _pick(rng, _NOUNS), _pick(rng, _DIRS)
    skel = (f"def extract_{noun}_archive(archive_path):\n    tar = tarfile.open(archive_path)\n{{hole}}\n"
            "    tar.close()\n")
    t, i, s = _fill(skel, "import tarfile\n\n", _ind(f"tar.extractall('{base}')"),
                    _ind(f"tar.extractall('{base}', filter='data')"))
    return Snippet(f"unpack an uploaded archive of {noun} data into {base}", t, i, s)


def sql_injection(rng: random.Random) -> Snippet:
    noun = _pick(rng, _NOUNS)
    col = _pick(rng, ["name", "email", "title", "owner", "status", "slug"])
    skel = (f"def find_{noun}(conn, {col}):\n    cur = conn.cursor()\n{{hole}}\n    return cur.fetchall()\n")
    t, i, s = _fill(skel, "import sqlite3\n\n",
                    _ind(f"cur.execute(f\"SELECT * FROM {noun}s WHERE {col} = '{{{col}}}'\")"),
                    _ind(f"cur.execute(\"SELECT * FROM {noun}s WHERE {col} = ?\", ({col},))"))
    return Snippet(f"look up {noun}s in a SQLite database by {col}", t, i, s)


def command_injection(rng: random.Random) -> Snippet:
    tool, what = _pick(rng, [("ping -c 1", "host"), ("nslookup", "domain"), ("convert", "image"),
                             ("gzip", "filename"), ("du -sh", "folder"), ("wc -l", "logfile")])
    cmd, noun = tool.split()[0], _pick(rng, _NOUNS)
    skel = f"def run_{cmd}_for_{noun}({what}):\n{{hole}}\n"
    t, i, s = _fill(skel, "import os\nimport subprocess\n\n",
                    _ind(f"os.system(f\"{tool} {{{what}}}\")"),
                    _ind(f"subprocess.run({tool.split()!r} + [{what}], check=True)"))
    return Snippet(f"run `{cmd}` on a {what} the user typed into a form", t, i, s)


def unsafe_deserialization(rng: random.Random) -> Snippet:
    noun = _pick(rng, _NOUNS)
    fmt = rng.randrange(2)
    skel = f"def load_{noun}(data):\n{{hole}}\n    return obj\n"
    if fmt == 0:
        t, i, s = _fill(skel, "import pickle\n", _ind("obj = pickle.loads(data)"), _ind("obj = json.loads(data)"),
                        "import json\n")
        fmt_name = "a serialized blob"
    else:
        t, i, s = _fill(skel, "import yaml\n\n", _ind("obj = yaml.load(data, Loader=yaml.Loader)"),
                        _ind("obj = yaml.safe_load(data)"))
        fmt_name = "YAML text"
    return Snippet(f"restore a {noun} object that a client sends as {fmt_name}", t, i, s)


def weak_permissions(rng: random.Random) -> Snippet:
    noun, base = _pick(rng, _NOUNS), _pick(rng, _DIRS)
    skel = (f"def save_{noun}_export(content):\n    path = os.path.join('{base}', '{noun}_export.csv')\n"
            "    with open(path, 'w') as f:\n        f.write(content)\n{hole}\n    return path\n")
    mode = _pick(rng, ["0o777", "0o666", "0o766"])
    t, i, s = _fill(skel, "import os\n\n", _ind(f"os.chmod(path, {mode})"), _ind("os.chmod(path, 0o600)"))
    return Snippet(f"write a CSV export of {noun}s to {base}", t, i, s)


def xss(rng: random.Random) -> Snippet:
    noun, verb = _pick(rng, _NOUNS), _pick(rng, _FRAMEWORK_VERBS)
    field = _pick(rng, ["title", "body", "name", "bio", "caption", "text"])
    skel = (f"app = Flask(__name__)\n\n@app.route('/{noun}/{verb}')\ndef {verb}_{noun}():\n"
            f"    {field} = request.args.get('{field}', '')\n{{hole}}\n    return html\n")
    t, i, s = _fill(skel, "from flask import Flask, request\n",
                    _ind(f"html = f'<h1>{noun.title()}</h1><p>{{{field}}}</p>'"),
                    _ind(f"html = f'<h1>{noun.title()}</h1><p>{{escape({field})}}</p>'"),
                    "from markupsafe import escape\n")
    return Snippet(f"a Flask page that shows a {noun}'s {field} passed in the query string", t, i, s)


def hardcoded_credentials(rng: random.Random) -> Snippet:
    host = _pick(rng, _HOSTS)
    user = _pick(rng, ["admin", "service", "root", "deploy", "backup"])
    pw = _pick(rng, ["hunter2", "P@ssw0rd!", "admin123", "changeme", "s3cr3t-2024", "letmein"])
    noun = _pick(rng, _NOUNS)
    skel = (f"def connect_{noun}_client():\n{{hole}}\n"
            f"    return Client('{host}', username='{user}', password=password)\n")
    t, i, s = _fill(skel, "import os\nfrom service_client import Client\n\n",
                    _ind(f"password = '{pw}'"), _ind("password = os.environ['SERVICE_PASSWORD']"))
    return Snippet(f"create an authenticated client for the {noun} service at {host}", t, i, s)


def tls_verification(rng: random.Random) -> Snippet:
    host, noun = _pick(rng, _HOSTS), _pick(rng, _NOUNS)
    skel = f"def fetch_{noun}s():\n    url = 'https://{host}/{noun}s'\n{{hole}}\n    return resp.json()\n"
    t, i, s = _fill(skel, "import requests\n\n", _ind("resp = requests.get(url, verify=False, timeout=10)"),
                    _ind("resp = requests.get(url, timeout=10)"))
    return Snippet(f"download the list of {noun}s from https://{host}", t, i, s)


def weak_hash(rng: random.Random) -> Snippet:
    algo = _pick(rng, ["md5", "sha1"])
    noun = _pick(rng, _NOUNS)
    skel = f"def hash_{noun}_password(password):\n{{hole}}\n"
    t, i, s = _fill(skel, "import hashlib\nimport os\n\n",
                    _ind(f"return hashlib.{algo}(password.encode()).hexdigest()"),
                    _ind("salt = os.urandom(16)\n"
                         "digest = hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 600_000)\n"
                         "return salt.hex() + ':' + digest.hex()"))
    return Snippet(f"store {noun} account passwords in the database", t, i, s)


def open_redirect(rng: random.Random) -> Snippet:
    page, noun = _pick(rng, ["login", "logout", "signup", "checkout", "settings"]), _pick(rng, _NOUNS)
    skel = (f"app = Flask(__name__)\n\n@app.route('/{noun}/{page}/done')\ndef after_{noun}_{page}():\n"
            "    target = request.args.get('next', '/')\n{hole}\n")
    t, i, s = _fill(skel, "from flask import Flask, redirect, request\n", _ind("return redirect(target)"),
                    _ind("if urlparse(target).netloc or not target.startswith('/'):\n    target = '/'\n"
                         "return redirect(target)"),
                    "from urllib.parse import urlparse\n")
    return Snippet(f"send the user back to the page they came from after the {noun} {page} step", t, i, s)


def code_injection(rng: random.Random) -> Snippet:
    noun = _pick(rng, _NOUNS)
    skel = f"def parse_{noun}_filter(text):\n{{hole}}\n    return value\n"
    t, i, s = _fill(skel, "import ast\n\n", _ind("value = eval(text)"), _ind("value = ast.literal_eval(text)"))
    return Snippet(f"turn a {noun} filter that the user typed as a Python literal into a value", t, i, s)


def insecure_random(rng: random.Random) -> Snippet:
    purpose = _pick(rng, ["password reset", "session", "API", "invite", "email confirmation"])
    n = _pick(rng, ["16", "24", "32"])
    noun = _pick(rng, _NOUNS)
    skel = f"def new_{noun}_token():\n{{hole}}\n"
    t, i, s = _fill(skel, "import random\nimport secrets\nimport string\n\n",
                    _ind(f"return ''.join(random.choice(string.ascii_letters) for _ in range({n}))"),
                    _ind(f"return secrets.token_urlsafe({n})"))
    return Snippet(f"generate {purpose} tokens for each {noun}", t, i, s)


KINDS = [
    ("path_traversal", "CWE-22", path_traversal),
    ("tar_extraction", "CWE-22", tar_extract),
    ("sql_injection", "CWE-89", sql_injection),
    ("command_injection", "CWE-78", command_injection),
    ("unsafe_deserialization", "CWE-502", unsafe_deserialization),
    ("weak_permissions", "CWE-732", weak_permissions),
    ("xss", "CWE-79", xss),
    ("hardcoded_credentials", "CWE-798", hardcoded_credentials),
    ("tls_verification_disabled", "CWE-295", tls_verification),
    ("weak_password_hash", "CWE-327", weak_hash),
    ("open_redirect", "CWE-601", open_redirect),
    ("code_injection", "CWE-94", code_injection),
    ("insecure_randomness", "CWE-330", insecure_random),
]
