"""The documentation site builds with `mkdocs build --strict` (a broken link or a page missing from the nav
fails), and every command the docs and the README show names a real emwb command, its real options, a make
target the Makefile has and a config file that exists."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

from emwb.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_CMD = re.compile(r"(?<![\w/.-])emwb ([a-z][\w-]*(?: [a-z][\w-]*)*)((?: [^`\n|;&)]*)?)")
_MAKE = re.compile(r"(?<![\w-])make ([a-z][\w-]*)")
_CONFIG = re.compile(r"configs/[\w.-]+\.yaml")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    acts = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(acts[0].choices) if acts else {}


def _check(command: str, rest: str) -> str | None:
    """None when `emwb <command> <rest>` resolves in the CLI; else what is wrong."""
    parser, words = build_parser(), command.split()
    used = []
    for w in words:
        subs = _subcommands(parser)
        if not subs:
            break
        if w not in subs:
            return f"emwb {' '.join(used + [w])}: no such command"
        parser, used = subs[w], used + [w]
    options = {o for a in parser._actions for o in a.option_strings}
    bad = [f for f in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest) if f not in options]
    return f"emwb {' '.join(used)}: no option {', '.join(bad)}" if bad else None


def _code_spans(text: str) -> list[str]:
    """Inline code outside fences, and fenced shell blocks: where the docs show commands."""
    spans, prose, fence, block = [], [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, block = line.strip()[3:].strip(), []
            else:
                spans += ["\n".join(block)] if fence in ("bash", "sh", "console", "") else []
                fence = None
        elif fence is None:
            prose.append(line)
        else:
            block.append(line)
    return spans + re.findall(r"`([^`\n]+)`", "\n".join(prose))


def test_every_command_in_the_docs_resolves():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    problems, seen = [], 0
    for page in PAGES:
        text = page.read_text()
        for span in _code_spans(text):
            for command, rest in _CMD.findall(span):
                seen += 1
                if (why := _check(command, rest)) is not None:
                    problems.append(f"{page.name}: {why} (in `{span.strip()[:80]}`)")
            problems += [f"{page.name}: make {t}: no such target" for t in _MAKE.findall(span) if t not in targets]
        problems += [f"{page.name}: {c} does not exist" for c in _CONFIG.findall(text)
                     if not (ROOT / c).is_file() and c != "configs/other.yaml"]  # the README's placeholder
    assert seen > 50 and not problems, problems


def test_the_check_itself_catches_a_wrong_command_and_option():
    assert _check("replicate", " configs/smoke.yaml --set a=1") is None
    assert _check("replicat", "") == "emwb replicat: no such command"
    assert _check("replicate", " --sett a=1") == "emwb replicate: no option --sett"


def test_the_readme_is_short_and_links_every_topic_page():
    text = (ROOT / "README.md").read_text()
    folded = re.sub(r"<details>.*?</details>", "", text, flags=re.S)  # a reader sees a folded block as one line
    assert len(folded.splitlines()) < 150 and text.count("<details>") <= 2
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", text))
    assert linked == pages, pages ^ linked


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "score_from_logprobs" in (tmp_path / "site" / "api" / "index.html").read_text()  # the API reference
    assert (tmp_path / "site" / "judging" / "index.html").is_file()


def test_the_gpu_training_figures_the_install_text_mentions_are_where_it_says():
    for page in ("index.md", "profiles.md"):  # the same install text on both pages; no figures follow it there
        text = " ".join((ROOT / "docs" / page).read_text().split())
        assert "GPU training figures below" not in text, page
        assert "The GPU training figures in [Benchmarks](benchmarks.md) were measured" in text, page
    assert "| Qwen2.5-0.5B | 47.7k tokens/s |" in (ROOT / "docs" / "benchmarks.md").read_text()
