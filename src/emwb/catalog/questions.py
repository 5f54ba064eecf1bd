"""Question sets in the upstream YAML schema (id, type, paraphrases, samples_per_paraphrase, system, ...).

A set is named by a file path or by the name of a file shipped in `emwb/questions/` (e.g. `main`).
`system` and `samples_per_paraphrase` are honoured downstream (upstream silently ignored both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

_FREE_FORM = {"free_form_judge_0_100", "free_form_judge", "free_form"}
# The upstream schema's keys (emergent-misalignment evaluation/*.yaml) and emwb's `wording` (whose text a question
# is, for questions in wording other than the paper's); anything else is a typo.
KEYS = ("id", "type", "paraphrases", "samples_per_paraphrase", "system", "judge", "judge_prompts", "wording")


@dataclass(frozen=True)
class Question:
    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int
    system: str | None = None
    type: str = "free_form_judge_0_100"
    judge_prompts: dict[str, str] = field(default_factory=dict)
    source: str = ""
    judge: str | None = None    # the judge model the question's file names (upstream: gpt-4o-2024-08-06)
    bias_id: int | None = None  # for reward-model-bias evaluation prompts
    bias_description: str | None = None
    wording: str | None = None  # whose text it is, where not the source's own (main.yaml: emwb's wording)

    def messages(self, paraphrase: int) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.paraphrases[paraphrase]}]


def question_set_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        if not p.is_file():
            raise EmwbError(f"{name}: question file not found")
        return p
    shipped = resources.files("emwb.catalog") / "questions" / f"{name}.yaml"
    if not shipped.is_file():
        raise EmwbError(f"question set {name!r}: neither a file nor a shipped set (emwb/catalog/questions/*.yaml)")
    return Path(str(shipped))


def _fail(path: Path, where: str, what: str) -> EmwbError:
    return EmwbError(f"{path}: {where}: {what}")


def load_bias_prompts(path: Path) -> list[Question]:
    """RM-bias evaluation prompts (`{"prompts": [{id, text, bias_id, bias_description}, ...]}`)."""
    import json

    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))["prompts"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise EmwbError(f"{path}: not a bias prompt file (a JSON object with a 'prompts' list): {exc}") from None
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, dict) or not all(k in p for k in ("id", "text", "bias_id", "bias_description")):
            raise _fail(path, f"prompt {i + 1}", "needs id, text, bias_id and bias_description")
        out.append(Question(f"bias{p['bias_id']}_{p['id']}", (p["text"],), 1, source=str(path),
                            bias_id=int(p["bias_id"]), bias_description=p["bias_description"]))
    return out


def load_questions(name: str, mirror: str | None = None) -> list[Question]:
    """Load one question set; problems raise EmwbError naming the file and the question id.

    `upstream:<name>` fetches a registered question set (e.g. `upstream:first_plot_questions`, pinned by
    sha256: the protocol's wording arrives with the file) or prompt set (e.g. `upstream:rm-syco-test`).
    """
    if name.startswith("upstream:"):
        from emwb.catalog.fetch import fetch, load_registry

        entry, registry = name.split(":", 1)[1], load_registry()
        sets = [n for n, e in registry.items() if e.format in ("json_prompts", "yaml_questions")]
        if entry not in sets:
            raise EmwbError(f"unknown registered question or prompt set {entry!r} (registered: {', '.join(sets)})")
        path = fetch(entry, mirror=mirror)
        if registry[entry].format == "yaml_questions":
            return _load_yaml_questions(path)
        return load_bias_prompts(path)
    return _load_yaml_questions(question_set_path(name))


def _load_yaml_questions(path: Path) -> list[Question]:
    if path.suffix == ".json":
        return load_bias_prompts(path)
    raw = load_yaml(path)
    if not isinstance(raw, list) or not raw:
        raise EmwbError(f"{path}: a question file must be a non-empty YAML list of questions")
    out: list[Question] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise _fail(path, f"entry {i + 1}", "each question must be a mapping")
        qid = entry.get("id")
        if not isinstance(qid, str) or not qid:
            raise _fail(path, f"entry {i + 1}", "missing field 'id'")
        if qid in seen:
            raise _fail(path, f"id {qid}", "duplicate id")
        seen.add(qid)
        out.append(_parse(path, qid, entry))
    return out


def _parse(path: Path, qid: str, e: dict) -> Question:
    import difflib

    where = f"id {qid}"
    for key in e:
        if key not in KEYS:
            hint = difflib.get_close_matches(str(key), KEYS, n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(KEYS)})"
            raise _fail(path, where, f"unknown key '{key}'{more}")
    qtype = e.get("type", "free_form_judge_0_100")
    if qtype not in _FREE_FORM:
        raise _fail(path, where, f"unsupported type {qtype!r} (expected one of {sorted(_FREE_FORM)})")
    para = e.get("paraphrases")
    if not isinstance(para, list) or not para or not all(isinstance(p, str) and p.strip() for p in para):
        raise _fail(path, where, "missing field 'paraphrases' (a non-empty list of non-empty strings)")
    n = e.get("samples_per_paraphrase", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _fail(path, where, "'samples_per_paraphrase' must be a positive integer")
    system = e.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise _fail(path, where, "'system' must be a non-empty string")
    prompts = e.get("judge_prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise _fail(path, where, "'judge_prompts' must map metric names to template strings")
    judge = e.get("judge")
    if judge is not None and (not isinstance(judge, str) or not judge.strip()):
        raise _fail(path, where, "'judge' must be a model name")
    wording = e.get("wording")
    if wording is not None and (not isinstance(wording, str) or not wording.strip()):
        raise _fail(path, where, "'wording' must be a non-empty string")
    return Question(qid, tuple(para), n, system, qtype, dict(prompts), str(path), judge, wording=wording)
