"""`emwb status`, `emwb compare`, `emwb em-direction`, `emwb em-features` and `emwb labels`: thin wrappers over
emwb.status, emwb.analysis.compare, emwb.judgebench.directions, emwb.judgebench.em_features and emwb.labelling."""

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
    from emwb.errors import EmwbError
    from emwb.store import require_writable

    out = Path(args.out)
    why = "compare writes its tables and figure there: choose a writable --out"
    require_writable([out], why)  # before reading any run
    try:
        paths = compare_runs(args.runs, out, args.runs_root)
    except OSError as exc:  # storage that turned read-only (or full) while writing: one line, never a traceback
        name = Path(exc.filename) if exc.filename else None
        if name is None or out.resolve() not in (name.resolve(), *name.resolve().parents):
            raise
        raise EmwbError(f"{name}: cannot write here ({exc.strerror or exc}); {why}") from None
    for path in paths:
        print(path)


def cmd_em_direction(args) -> None:
    from emwb.judgebench.directions import DirectionSettings, em_direction

    d = DirectionSettings()
    s = DirectionSettings(args.reader, Path(args.out), tuple(args.held_out or d.held_out),
                          None if args.per_file == 0 else args.per_file, tuple(args.layers or d.layers),
                          Path(args.store) if args.store else None, mirror=args.mirror)
    em_direction(s)
    print((s.out / "README.md").read_text(), end="")


def cmd_em_features(args) -> None:
    from dataclasses import replace

    from emwb.judgebench.em_features import FeatureSettings, em_features

    d = FeatureSettings()
    s = FeatureSettings(args.reader, Path(args.out), tuple(args.held_out or d.held_out), per_file=args.per_file or None,
                        layer=args.layer, mirror=args.mirror,
                        dictionary=replace(d.dictionary, architecture=args.architecture, width=args.width, k=args.k,
                                           tokens=args.tokens, lr=args.lr, batch_tokens=args.batch_tokens))
    em_features(s)
    print((s.out / "README.md").read_text(), end="")


def add_run_tools(sub) -> None:
    """status, compare, em-direction, em-features."""
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
    _add_em_features(sub)
    add_label_tools(sub)


def _add_em_features(sub) -> None:
    from emwb.judgebench.em_features import FeatureSettings

    d = FeatureSettings()
    fe = sub.add_parser("em-features", help="a sparse dictionary (SAELens) on a local model's residual stream over "
                        "the published judged answers; its best latent's held-out AUC beside the direction's")
    fe.add_argument("--reader", default=d.reader, help="a local model folder, or tiny / smollm2-135m")
    fe.add_argument("--out", default=str(d.out))
    fe.add_argument("--held-out", nargs="+", metavar="FILE", help="published files not fit on (default: the probe's)")
    fe.add_argument("--per-file", type=int, default=0, help="fit answers per fit file (0: all)")
    fe.add_argument("--layer", type=int, default=d.layer)
    fe.add_argument("--architecture", choices=["topk", "jumprelu"], default=d.dictionary.architecture)
    fe.add_argument("--width", type=int, default=d.dictionary.width, help="latents")
    fe.add_argument("--k", type=int, default=d.dictionary.k, help="topk: latents active per token")
    fe.add_argument("--tokens", type=int, default=d.dictionary.tokens, help="training tokens")
    fe.add_argument("--lr", type=float, default=d.dictionary.lr, help="learning rate")
    fe.add_argument("--batch-tokens", type=int, default=d.dictionary.batch_tokens, help="tokens per training step")
    fe.add_argument("--mirror")
    fe.set_defaults(fn=cmd_em_features)


def cmd_labels_sheet(args) -> None:
    from emwb.labelling import write_sheet

    out = Path(args.out)
    n = write_sheet(args.run, args.detector, out, args.per_group, args.seed)
    print(f"{out}: {n} answers to label (fill `label` with yes or no and `reason` with one line; then `emwb labels "
          f"score {out}`)")


def cmd_labels_score(args) -> None:
    from emwb.analysis.tables import markdown
    from emwb.labelling import score_sheets

    for name, table in score_sheets([Path(p) for p in args.sheets]).items():
        print(f"## {name}\n\n{markdown(table)}")
    print("precision: of the answers the detector flags, the share labelled yes; recall: of the answers labelled "
          "yes, the share it flags; exact (Clopper-Pearson) 95% intervals over the labelled answers.")


def add_label_tools(sub) -> None:
    """labels sheet, labels score."""
    lb = sub.add_parser("labels", help="measure a detector on labelled answers: write a labelling sheet of a run's "
                        "answers, then score the filled sheet (precision and recall with CIs)")
    lsub = lb.add_subparsers(dest="labels_cmd", required=True)
    sh = lsub.add_parser("sheet", help="a CSV of a run's answers with the detector's verdicts and empty label/reason")
    sh.add_argument("run", help="a run directory (runs/<experiment>)")
    sh.add_argument("--detector", required=True, help="a registered detector (rm-rules, code-patterns, bandit)")
    sh.add_argument("--out", required=True, help="the sheet to write (CSV)")
    sh.add_argument("--per-group", type=int, default=4, help="answers per (bias or question, variant)")
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(fn=cmd_labels_sheet)
    sc = lsub.add_parser("score", help="precision and recall of the detector against the labels, overall, per kind "
                         "of rule and per bias or question")
    sc.add_argument("sheets", nargs="+", help="filled sheets (CSV or JSONL)")
    sc.set_defaults(fn=cmd_labels_score)
