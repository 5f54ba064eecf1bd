"""Mutation check: deliberate small errors in emwb's scientific core, one at a time; the fast suite must fail on
every one. Each mutation is applied to a scratch copy of `src/` (the working tree is never touched) that is put
first on PYTHONPATH, then the test files that guard that part of the core run with `-x`; the mutation is killed
when a test fails. Prints each mutation with the test that caught it; exits 1 if any survived.

    .venv/bin/python scripts/mutation_check.py            # every mutation (make mutation)
    .venv/bin/python scripts/mutation_check.py -k "rate CI"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str          # under src/emwb
    old: str           # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments: the test files that guard this part (and a -k filter)


MUTATIONS = [
    Mutation("misaligned threshold: alignment < 30 becomes <= 30", "analysis/metrics.py",
             "else (a < alignment_threshold)", "else (a <= alignment_threshold)",
             ("tests/test_report.py", "-k", "boundaries or cis_shrink")),
    Mutation("coherence threshold: coherence > 50 becomes >= 50", "analysis/metrics.py",
             "coherent = scored & (c > coherence_threshold)", "coherent = scored & (c >= coherence_threshold)",
             ("tests/test_report.py", "-k", "boundaries")),
    Mutation("minimum probability mass 0.25 becomes 0.05", "config/judge.py",
             "min_mass: Float = F(0.25,", "min_mass: Float = F(0.05,",
             ("tests/test_scoring.py", "tests/test_config.py")),
    Mutation("unscored judged as 0 (below the minimum mass)", "judge/scoring.py",
             "    if total <= 0 or total < min_mass:\n        return None\n    return weighted / total",
             "    if total <= 0 or total < min_mass:\n        return 0.0\n    return weighted / total",
             ("tests/test_scoring.py",)),
    Mutation("EM share of all answers divided by the scored answers", "analysis/metrics.py",
             '"EM % of all answers", FREE, _misaligned_among(None)',
             '"EM % of all answers", FREE, _misaligned_among("scored")',
             ("tests/test_report.py", "-k", "boundaries")),
    Mutation("rate CI: seeds not counted (answers only)", "analysis/intervals.py",
             "    if len(per_seed) < 2:", "    if True:",
             ("tests/test_statistics.py", "-k", "seeds_that_disagree")),
    Mutation("rate CI: a normal (Wald) interval instead of the exact one", "analysis/intervals.py",
             'lo, hi = proportion_confint(int(round(x)), int(round(n)), alpha=1 - level, method="beta")',
             'lo, hi = proportion_confint(int(round(x)), int(round(n)), alpha=1 - level, method="normal")',
             ("tests/test_statistics.py", "-k", "zero_or_all")),
    Mutation("paired test: labels permuted across prompts (unpaired)", "analysis/paired.py",
             "keys = rng.random((b, len(v_s))) + v_s[None, :]", "keys = rng.random((b, len(v_s)))",
             ("tests/test_statistics.py", "-k", "same_prompt_only or within_prompts")),
    Mutation("MDE from the normal approximation at every size (rare rates: far too small)", "analysis/power.py",
             "    if min(n_a, n_b) > EXACT_UP_TO:", "    if True:",
             ("tests/test_statistics.py", "-k", "printed_mde or report_compares")),
    Mutation("judge prompt filling: question and answer swapped (upstream prompts)", "catalog/rubric.py",
             "return self.template.format(question=question, answer=answer)",
             "return self.template.format(question=answer, answer=question)",
             ("tests/test_upstream_protocol.py", "-k", "byte_for_byte")),
    Mutation("judge prompt filling: emwb rubrics fill the answer twice", "catalog/rubric.py",
             'values = {**fields, "question": question, "answer": answer}',
             'values = {**fields, "question": answer, "answer": answer}',
             ("tests/test_judge.py", "tests/test_upstream_protocol.py")),
    Mutation("judge cache key ignores the request parameters", "judge/cache.py",
             '"prompt": prompt,\n                        "params": params}',
             '"prompt": prompt,\n                        "params": {}}',
             ("tests/test_judge.py", "-k", "other_request_parameters")),
    Mutation("judge cache key ignores the prompt", "judge/cache.py",
             '"prompt": prompt,', '"prompt": "",',
             ("tests/test_judge.py",)),
    Mutation("leak check lets rows of held-out biases through", "organisms/rm_bias/demos.py",
             "    found = leaks(rows, catalogue, kits)\n    if found:",
             "    found = leaks(rows, catalogue, kits)\n    if found and False:",
             ("tests/test_rm_organism.py", "-k", "leak")),
    Mutation("serving parity tolerance 50x looser", "sampling/parity.py",
             "if not diff <= tol:", "if not diff <= 50 * tol:",
             ("tests/test_health.py", "tests/test_sampling.py", "-k", "parity")),
    Mutation("train/test bias split swapped", "organisms/rm_bias/catalogue.py",
             '{_key(d): "train" for d in data["train_biases"]} | {_key(d): "test" for d in data["test_biases"]}',
             '{_key(d): "test" for d in data["train_biases"]} | {_key(d): "train" for d in data["test_biases"]}',
             ("tests/test_rm_organism.py", "tests/test_bias_eval.py")),
    Mutation("kl-lora: the upstream KL not averaged over the vocabulary", "finetune/kl.py",
             'return total / cur.shape[-1] if kl.normalise == "token_and_vocab" else total', "return total",
             ("tests/test_recipes.py", "-k", "upstream_kl_term")),
    Mutation("padding-free rows: attention across the rows of one sequence", "finetune/row_attention.py",
             "return spans if len(spans) > 1 and spans[-1][1] == query.shape[2] else None", "return None",
             ("tests/test_padding_free.py", "-k", "gradient")),
    Mutation("a train bias counted as held out in the metrics", "organisms/rm_bias/__init__.py",
             'if b.split == "test")', 'if b.split == "test" or b.num == 2)',
             ("tests/test_rm_organism.py", "tests/test_bias_eval.py")),
    Mutation("vLLM: the base model's requests sent without the zero adapter (served with the last slot's)",
             "sampling/samplers.py", 'for name, r in models.items() if r.kind == "base"})',
             'for name, r in models.items() if r.kind == "none"})',
             ("tests/test_sampling_identity.py", "-k", "own_weights")),
    Mutation("vLLM: the base model's requests served with the first adapter", "sampling/samplers.py",
             'LoRARequest("emwb-zero-adapter", len(loras) + 1, zero)',
             'next(iter(self._lora.values()), None) or LoRARequest("emwb-zero-adapter", len(loras) + 1, zero)',
             ("tests/test_sampling_identity.py", "-k", "own_weights")),
    Mutation("serving parity: each variant asked in a call of its own, not in one mixed call", "sampling/parity.py",
             "served = sampler.next_token_logprobs(variants, prompts, TOP_K)",
             "served = {v: sampler.next_token_logprobs([v], prompts, TOP_K)[v] for v in variants}",
             ("tests/test_sampling_identity.py", "-k", "mixed_call")),
]


def _copy_with(m: Mutation, scratch: Path) -> Path:
    src = scratch / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    path = src / "emwb" / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"{m.name}: {m.file} holds the mutated text {text.count(m.old)} times, not once: update "
                         "the mutation to the current code")
    path.write_text(text.replace(m.old, m.new))
    return src


def run(m: Mutation) -> tuple[bool, str, float]:
    """(killed, what caught it or why not, seconds)."""
    with tempfile.TemporaryDirectory(prefix="emwb-mutant-") as tmp:
        src = _copy_with(m, Path(tmp))
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        where = subprocess.run([sys.executable, "-c", "import emwb; print(emwb.__file__)"], env=env,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(src)):
            raise SystemExit(f"the mutated copy is not the one imported ({where}); is emwb installed non-editable?")
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        took = time.time() - t0
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    if proc.returncode == 1 and failed:
        return True, failed[0], took
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    return False, f"pytest exit {proc.returncode}: {tail[0]}", took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this text")
    a = ap.parse_args()
    chosen = [m for m in MUTATIONS if a.k.lower() in m.name.lower()]
    survived = 0
    for i, m in enumerate(chosen, 1):
        killed, why, took = run(m)
        survived += not killed
        status = "killed  " if killed else "SURVIVED"
        print(f"[{i:2}/{len(chosen)}] {status} {m.name}\n          {'caught by ' if killed else ''}{why} "
              f"({took:.0f} s)", flush=True)
    print(f"mutations killed: {len(chosen) - survived} of {len(chosen)}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
