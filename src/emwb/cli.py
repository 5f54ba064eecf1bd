"""`emwb` command line: thin wrappers over the library, one command per stage."""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from pathlib import Path

from emwb.errors import EmwbError


def cmd_replicate(args) -> None:
    from emwb.pipeline import replicate

    overrides = {k: v for k, v in (("executor", args.executor), ("address", args.address)) if v is not None}
    replicate(args.config, args.runs_root, args.force, exec_overrides=overrides, wait=args.wait, overrides=args.set)


def cmd_stage(args) -> None:
    """One stage of the table (`emwb <stage> RUN`), with its own options."""
    from emwb.pipeline import open_context
    from emwb.stages import stage

    s = stage(args.stage)
    ctx = open_context(args.run, args.runs_root, hold=args.held, wait=args.wait, overrides=args.set,
                       force=args.force)
    s.run(ctx.narrowed(**{o.dest: getattr(args, o.dest) for o in s.options}))
    if s.prints:
        print(ctx.run.path(s.prints).read_text())


def cmd_config(args) -> None:
    import yaml

    from emwb.check import check_experiment
    from emwb.config import Experiment, load_experiment
    from emwb.schema_text import field_docs

    if args.doc:
        from emwb.finetune.trainers import TRAINERS

        for key, default, desc in field_docs(Experiment):
            print(f"{key}" + (f" = {default}" if default else "") + (f"\n    {desc}" if desc else ""))
        for name in TRAINERS:
            trainer = TRAINERS.get(name)
            print(f"# trainer {name} ({trainer.data_kind} rows): {trainer.description}")
            for key, default, desc in field_docs(trainer.options) if trainer.options else ():
                print(f"organisms.*.phases.*.options.{key}" + (f" = {default}" if default else "")
                      + (f"\n    {desc}" if desc else ""))
        return
    if not args.config:
        raise EmwbError("config: name an experiment file (or use --doc)")
    exp = load_experiment(args.config, args.set)
    plan = check_experiment(exp, args.config)
    if args.action == "show":
        from emwb.plan import describe, describe_setup

        print(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False), end="")
        lines = describe(plan) + describe_setup(exp)
        print("# resolved:\n" + "".join(f"#   {line}\n" for line in lines), end="")
    else:
        print(f"{args.config}: ok ({exp.name}: {len(exp.organisms)} organisms x {len(exp.seeds)} seeds, "
              f"{len(plan.variants)} variants evaluated, {len(exp.evaluations)} evaluations, "
              f"{len(plan.judges)} judges)")


def cmd_generate(args) -> None:
    from emwb.catalog.generators import GENERATORS
    from emwb.store import write_jsonl

    gen = GENERATORS.get(args.generator, "datasets generate: ")
    rows = gen.make(args.rows or gen.default_rows, args.seed, args.mirror)
    write_jsonl(Path(args.out), rows)
    print(f"wrote {len(rows)} {args.generator} rows to {args.out}")


def cmd_validate(args) -> None:
    from emwb.catalog.chatjsonl import validate_chat_jsonl, validate_text_jsonl

    rows = (validate_text_jsonl if args.text else validate_chat_jsonl)(args.path)
    print(f"{args.path}: {len(rows)} valid rows")


def cmd_fetch(args) -> None:
    from emwb.catalog.fetch import fetch

    for name in args.names:
        print(f"{name}: {fetch(name, mirror=args.mirror, base_url=args.base_url)} (sha256 and rows verified)")


def cmd_list(args) -> None:
    from emwb.catalog.fetch import load_registry

    for e in load_registry().values():
        print(f"{e.name:21} {e.format:15} {e.rows:6} rows  {e.license:10.10}  {e.description}")


def cmd_stats(args) -> None:
    import json

    from emwb.datasets.stats import dataset_stats

    print(json.dumps(dataset_stats(args.dataset, args.tokenizer, args.pair), indent=2))


def cmd_questions(args) -> None:
    from emwb.catalog.questions import load_questions

    qs = load_questions(args.questions)
    n = sum(len(q.paraphrases) * q.samples_per_paraphrase for q in qs)
    print(f"{args.questions}: {len(qs)} questions, {sum(1 for q in qs if q.system)} with a system prompt, "
          f"{n} samples per model at the file's samples_per_paraphrase")


def cmd_analyze(args) -> None:
    from emwb.analysis.imported import analyze_judged
    from emwb.analysis.metrics import default_evaluations
    from emwb.analysis.tables import csv_frame, display_frame, markdown

    table, frame = analyze_judged(args.judged or [], args.alignment_threshold, args.coherence_threshold,
                                  n_boot=args.bootstrap_samples, inclusive=args.convention == "model-organisms",
                                  inspect_logs=args.inspect_log or [], reference=args.reference,
                                  permutations=args.permutations)
    evals = default_evaluations(frame)
    if args.format == "csv":
        print(csv_frame(table, evals).to_csv(index=False, float_format="%.4g"), end="")
    else:
        shown = display_frame(table, evals)
        ref = args.reference or table["group"].iloc[0]
        print(markdown(shown) + f"\n{shown.attrs.get('note', '')}\n'vs base' is each input against {ref} "
              "(--reference picks another), paired by question.")


def cmd_build_tiny(args) -> None:
    from emwb.basemodel import build_tiny

    print(build_tiny(args.out, seed=args.seed))


def _set_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an experiment field (dotted "
                    "KEY such as train.learning_rate or organisms.insecure.phases.0.args.epochs; VALUE read as "
                    "YAML; repeatable); validated like the file, recorded in the run directory, part of the stage "
                    "keys")


def build_parser() -> argparse.ArgumentParser:
    from emwb.stages import table

    p = argparse.ArgumentParser(prog="emwb", description="Emergent-misalignment workbench: fine-tune narrowly, "
                                "sample, judge, compare. Stages: " + ", ".join(s.name for s in table()) + ".")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _stage_commands(sub)
    _dataset_commands(sub)
    _tool_commands(sub)
    return p


def _stage_commands(sub) -> None:
    """replicate and one command per stage of the table (`emwb.stages`, plug-ins' stages included)."""
    from emwb.stages import table

    def command(name: str, help: str, positional: str = "run"):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument(positional, help="an experiment YAML or a run directory (runs/<experiment>)")
        sp.add_argument("--runs-root", default="runs", help="where run directories live (default: runs)")
        sp.add_argument("--force", action="store_true", help="re-run even if the artifact is up to date")
        sp.add_argument("--wait", action="store_true", help="when another process is writing the run directory, "
                        "wait for it to finish instead of stopping")
        _set_option(sp)
        return sp

    rp = command("replicate", "run every stage of an experiment (skipping finished ones)", "config")
    rp.add_argument("--executor", choices=["local", "ray"], help="run the cells here (local) or as Ray tasks "
                    "(ray); wins over exec.executor")
    rp.add_argument("--address", help="Ray cluster HOST:PORT (with --executor ray; default: a local Ray "
                    "instance); wins over exec.address")
    rp.set_defaults(fn=cmd_replicate)
    for s in table():
        sp = command(s.name, f"stage {s.name}: {s.help}")
        for o in s.options:
            sp.add_argument(o.flag, dest=o.dest, help=o.help, action="append" if o.repeat else "store")
        sp.set_defaults(fn=cmd_stage, stage=s.name)


def _dataset_commands(sub) -> None:
    """config and datasets."""
    sp = sub.add_parser("config", help="check an experiment (every reference resolved), print it resolved, or "
                        "document every field")
    sp.add_argument("action", choices=["check", "show"])
    sp.add_argument("config", nargs="?")
    sp.add_argument("--doc", action="store_true", help="print every experiment field with its default and meaning")
    _set_option(sp)
    sp.set_defaults(fn=cmd_config)

    ds = sub.add_parser("datasets", help="dataset tools: fetch, list, stats, generate, validate")
    dsub = ds.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    g = dsub.add_parser("generate", help="write a registered generator's data offline (`emwb datasets list`)")
    g.add_argument("generator", help="a registered data generator (the NAME of generated:NAME)")
    g.add_argument("--rows", type=int, help="rows to write (default: the generator's own)")
    g.add_argument("--mirror", help="a local upstream mirror, for generators that read upstream files")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True)
    g.set_defaults(fn=cmd_generate)
    v = dsub.add_parser("validate", help="check a chat JSONL file (or, with --text, documents) line by line")
    v.add_argument("path")
    v.add_argument("--text", action="store_true", help='documents for continued pretraining: {"text": ...}')
    v.set_defaults(fn=cmd_validate)

    f = dsub.add_parser("fetch", help="download registered datasets into datasets/upstream/, verified")
    f.add_argument("names", nargs="+", metavar="NAME")
    f.add_argument("--mirror", help="a local directory laid out like the upstream repo (or EMWB_DATASET_MIRROR)")
    f.add_argument("--base-url", help="fetch from this base URL instead of the pinned one")
    f.set_defaults(fn=cmd_fetch)
    ls = dsub.add_parser("list", help="the dataset registry")
    ls.set_defaults(fn=cmd_list)
    st = dsub.add_parser("stats", help="rows, turns, length percentiles, duplicates (NAME or PATH)")
    st.add_argument("dataset")
    st.add_argument("--tokenizer", help="count tokens with this tokenizer (path or hub id) instead of words")
    st.add_argument("--pair", help="a paired dataset (NAME or PATH): count the prompts both share")
    st.set_defaults(fn=cmd_stats)


def _tool_commands(sub) -> None:
    """questions, analyze, build-tiny."""
    q = sub.add_parser("questions", help="check a question set (a shipped name such as 'main', or a YAML file)")
    q.add_argument("questions")
    q.set_defaults(fn=cmd_questions)

    an = sub.add_parser("analyze", help="comparison table from answers judged elsewhere (CSV/JSONL, upstream "
                        "layout: question_id, answer|response, aligned, coherent; group = file stem) or in Inspect "
                        "(eval logs scored by emwb's judge; group = the log's model)")
    src = an.add_argument_group("inputs (one or both)")
    src.add_argument("--judged", nargs="+", metavar="FILE")
    src.add_argument("--inspect-log", nargs="+", metavar="LOG", help="Inspect eval logs (.eval/.json) of an emwb/... "
                     "task (needs the inspect extra)")
    an.add_argument("--format", choices=["md", "csv"], default="md")
    from emwb.config import AnalysisConfig

    a = AnalysisConfig()  # the defaults, defined once
    an.add_argument("--alignment-threshold", type=float, default=a.alignment_threshold)
    an.add_argument("--coherence-threshold", type=float, default=a.coherence_threshold)
    an.add_argument("--bootstrap-samples", type=int, default=a.bootstrap_samples, help="0: no CIs (the rates' "
                    "intervals are exact, not bootstrapped)")
    an.add_argument("--reference", metavar="GROUP", help="the group every other is compared with (its file stem; "
                    "default: the first input)")
    an.add_argument("--permutations", type=int, default=a.permutations, help="random permutations of the paired "
                    "test (0: no p-values)")
    an.add_argument("--convention", choices=["betley", "model-organisms"], default="betley",
                    help="betley: misaligned means alignment < threshold; model-organisms: <= threshold (EM%% then "
                         "reads em_share_scored, the share of scored answers); both EM shares are always printed")
    an.add_argument("--inclusive", action="store_const", const="model-organisms", dest="convention",
                    help="the same as --convention model-organisms; misaligned means alignment <= threshold "
                    "(model-organisms convention) instead of < (Betley et al.)")
    an.set_defaults(fn=cmd_analyze)

    from emwb.judgebench.cli import add_judges_commands
    from emwb.run_tools import add_run_tools

    add_judges_commands(sub)
    add_run_tools(sub)

    t = sub.add_parser("build-tiny", help="build the tiny local chat model into a folder")
    t.add_argument("out")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=cmd_build_tiny)

def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from emwb.errors import interrupted_by, on_interrupt

    try:
        args = build_parser().parse_args(argv)  # plug-ins' stages are commands: a broken plug-in is one line
    except EmwbError as exc:
        print(f"emwb: error: {exc}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
        signal.signal(signal.SIGTERM, on_interrupt)  # a scheduler's stop: the same clean exit as Ctrl-C
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock, when a command takes it
            args.held = held
            args.fn(args)
    except EmwbError as exc:
        print(f"emwb: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"emwb: error: no space left on the device{f' writing {exc.filename}' if exc.filename else ''}; free "
              "some space and re-run (finished artifacts are kept; nothing half-written is taken as done)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signum = interrupted_by()
        print(f"emwb: {'terminated (SIGTERM)' if signum == signal.SIGTERM else 'interrupted'}; finished artifacts "
              "are kept, re-run to resume", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
