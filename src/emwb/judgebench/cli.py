"""`emwb judges bench` and `emwb judges train-probe`: thin wrappers over `emwb.judgebench`."""

from __future__ import annotations

from pathlib import Path

from emwb.judgebench.probe_train import ProbeSettings
from emwb.judgebench.run import BenchSettings


def cmd_judges_bench(args) -> None:
    from emwb.config import JudgeMode, JudgePrice
    from emwb.judgebench.report import write_bench
    from emwb.judgebench.run import BenchSettings, run_bench
    from emwb.yamlio import load_yaml

    prices = {m: JudgePrice(**p) for m, p in (load_yaml(Path(args.prices))["models"] if args.prices else {}).items()}
    modes = {spec: JudgeMode(scoring="written", samples=args.samples) for spec in args.written or []}
    s = BenchSettings(Path(args.out), args.base_url, args.per_file, args.files, args.mirror, args.seed,
                      args.concurrency, modes, prices, batch=args.batch)
    table, per_file, judged = run_bench(args.judges, s)
    for path in write_bench(s.out, table, per_file, judged):
        print(path)
    print((s.out / "judges_bench.md").read_text(), end="")


def cmd_train_probe(args) -> None:
    from emwb.judgebench.probe_train import ProbeSettings, train_probe

    d = ProbeSettings()
    s = ProbeSettings(args.reader, Path(args.out), tuple(args.held_out or d.held_out),
                      None if args.per_file == 0 else args.per_file, args.test_per_file,
                      tuple(args.layers or d.layers), mirror=args.mirror, batch_size=args.batch_size,
                      device=args.device, run=args.run, judge=args.judge)
    train_probe(s)
    print((s.out / "bench" / "judges_bench.md").read_text(), end="")



def add_judges_commands(sub) -> None:
    """The `judges` command and its actions."""
    js = sub.add_parser("judges", help="judge tools: bench (any judge against 10,000 published GPT-4o judgments)")
    jsub = js.add_subparsers(dest="judges_command", required=True, metavar="ACTION")
    b, d = jsub.add_parser("bench", help="judge the published answers and compare with the reference judgments"), \
        BenchSettings()
    b.add_argument("judges", nargs="+", metavar="SPEC", help="judge strings, e.g. openai/gpt-4o-mini, hf/PATH")
    b.add_argument("--base-url", help="an OpenAI-compatible server for openai/ judges (else OPENAI_BASE_URL)")
    b.add_argument("--per-file", type=int, help="a seeded subset of N answers per file, spread over its questions "
                   "(default: every answer)")
    b.add_argument("--files", nargs="+", help="published files by label (default: all 25)")
    b.add_argument("--out", default=str(d.out), help="output folder, with its judge cache (default: %(default)s)")
    b.add_argument("--mirror", help="a local copy of the upstream repositories (or EMWB_DATASET_MIRROR)")
    b.add_argument("--seed", type=int, default=d.seed, help="seed of the --per-file subset")
    b.add_argument("--concurrency", type=int, default=d.concurrency, help="requests in flight per openai/ judge")
    b.add_argument("--written", action="append", metavar="SPEC", help="score this judge from written replies "
                   "(no logprobs needed; repeatable)")
    b.add_argument("--samples", type=int, default=5, help="written replies per judgment (default: %(default)s)")
    b.add_argument("--prices", help="a YAML file of model prices (the layout of emwb/catalog/prices.yaml)")
    b.add_argument("--batch", action="store_true", help="openai/ judges through the Batch API (half price; a "
                   "re-run resumes the batches in flight)")
    b.set_defaults(fn=cmd_judges_bench)
    tp, d = jsub.add_parser("train-probe", help="fit a probe/ judge (a linear readout of a local model's "
                            "activations) on published judgments; its held-out bench is written beside it"), \
        ProbeSettings()
    tp.add_argument("--reader", default=d.reader, help="the model read: a local folder, or tiny / smollm2-135m "
                    "(built locally; default: %(default)s)")
    tp.add_argument("--out", default=str(d.out), help="the probe's folder (default: %(default)s); judge string "
                    "probe/<folder>")
    tp.add_argument("--held-out", nargs="+", metavar="FILE", help="published files not fit on (default: the three "
                    "Llama-3.2-1B files and gemma-3-4b bad-medical-advice and extreme-sports)")
    tp.add_argument("--per-file", type=int, default=d.per_file, help="training answers per training file, spread "
                    "over its questions (0: all; default: %(default)s)")
    tp.add_argument("--test-per-file", type=int, help="held-out answers per held-out file (default: all)")
    tp.add_argument("--layers", type=int, nargs="+", help=f"layers to choose from (default: {list(d.layers)})")
    tp.add_argument("--batch-size", type=int, default=d.batch_size)
    tp.add_argument("--device", default=d.device)
    tp.add_argument("--mirror", help="a local copy of the upstream repositories (or EMWB_DATASET_MIRROR)")
    tp.add_argument("--run", help="fit on this run's judged answers instead of the published files (with --judge, "
                    "and --held-out naming the run's variants to bench on)")
    tp.add_argument("--judge", help="with --run: the judge string whose judgments are the reference")
    tp.set_defaults(fn=cmd_train_probe)
