"""`emwb status`, `emwb compare` and `emwb em-direction`: thin wrappers over emwb.status, emwb.analysis.compare
and emwb.judgebench.directions."""

from __future__ import annotations

from pathlib import Path


def cmd_status(args) -> None:
    import json

    from emwb.context import StageContext
    from emwb.plan import plan_for
    from emwb.status import run_status, status_json, status_text
    from emwb.store import Run

    run = Run.open(args.run, args.runs_root)
    rows = run_status(StageContext(run, plan_for(run, keep=False)))
    print(json.dumps(status_json(run, rows), indent=2) if args.json else status_text(run, rows))


def cmd_compare(args) -> None:
    from emwb.analysis.compare import compare_runs

    for path in compare_runs(args.runs, Path(args.out), args.runs_root):
        print(path)


def cmd_em_direction(args) -> None:
    from emwb.judgebench.directions import DirectionSettings, em_direction

    d = DirectionSettings()
    s = DirectionSettings(args.reader, Path(args.out), tuple(args.held_out or d.held_out),
                          None if args.per_file == 0 else args.per_file, tuple(args.layers or d.layers),
                          Path(args.store) if args.store else None, mirror=args.mirror)
    em_direction(s)
    print((s.out / "README.md").read_text(), end="")



def add_run_tools(sub) -> None:
    """status, compare, em-direction."""
    st = sub.add_parser("status", help="per stage and variant: current, stale (which input changed), missing or in "
                        "progress (chunks saved, judgments cached, training step), and the time each took")
    st.add_argument("run", help="a run directory (runs/<experiment>) or its experiment YAML")
    st.add_argument("--runs-root", default="runs")
    st.add_argument("--json", action="store_true", help="machine-readable")
    st.set_defaults(fn=cmd_status)
    cp = sub.add_parser("compare", help="one table and figure across runs (same metrics and CIs; rows by run and "
                        "organism; runs judged differently are marked)")
    cp.add_argument("runs", nargs="+", metavar="RUN_OR_EXPERIMENT")
    cp.add_argument("--out", default="compare", help="output folder (default: %(default)s)")
    cp.add_argument("--runs-root", default="runs")
    cp.set_defaults(fn=cmd_compare)

    dr = sub.add_parser("em-direction", help="the EM direction read from the published judged answers by a local "
                        "model, per layer, and its held-out AUC as a misalignment detector")
    dr.add_argument("--reader", default="smollm2-135m", help="a local model folder, or tiny / smollm2-135m")
    dr.add_argument("--out", default="directions/smollm2-em")
    dr.add_argument("--held-out", nargs="+", metavar="FILE", help="published files the direction is not fit on "
                    "(default: the probe's five)")
    dr.add_argument("--per-file", type=int, default=100, help="training answers per training file (0: all)")
    dr.add_argument("--layers", type=int, nargs="+")
    dr.add_argument("--store", help="an activations folder to reuse (a probe's: probes/<name>/activations)")
    dr.add_argument("--mirror")
    dr.set_defaults(fn=cmd_em_direction)
