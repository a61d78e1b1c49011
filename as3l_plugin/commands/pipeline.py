"""``as3l run`` (the whole job) and ``as3l bench`` (the comparison grid)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="the whole AS3L job: pretrain → features → fine-tune → select → labels → "
                    "prior → as3l_flexmatch + FlexMatch-random baseline → summary",
        description="Run every stage of AS3L from one pipeline YAML:\n"
                    "  pretrain, features, finetune, select, labels, prior, train_as3l,\n"
                    "  baseline_select, train_baseline, evaluate.\n"
                    "Each stage writes into <out>/<stage>/ and is cached by the hash of its\n"
                    "inputs: a re-run skips finished stages, a changed input re-runs what\n"
                    "depends on it, and a killed run resumes (trainings from their latest\n"
                    "checkpoint). The summary table is printed at the end and written to\n"
                    "<out>/summary.md, with metrics.csv and PNG plots next to it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  as3l run --config usb_configs/digits/pipeline.yaml\n"
               "  as3l run --config usb_configs/digits/pipeline.yaml --force train_as3l")
    p.add_argument("--config", "-c", required=True, help="pipeline YAML "
                   "(e.g. usb_configs/digits/pipeline.yaml)")
    p.add_argument("--out", help="run directory (default: results/<name from the config>)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="re-run STAGE even if cached (repeatable; 'all' for every stage). "
                        "Dependants re-run only if its outputs change.")
    p.set_defaults(func=_run)

    b = subparsers.add_parser(
        "bench", help="grid of samplers × SSL algorithms × budgets × seeds → the paper's tables",
        description="One USB training per cell (sampler, algorithm, labels per class, seed),\n"
                    "all at the same number of iterations; pretraining and features are\n"
                    "shared per seed. Writes <out>/tables.md (the paper's Tables 1, 2, 4-6 as\n"
                    "mean ± std over seeds), cells.csv, priors.csv and plots/. Resumable:\n"
                    "finished cells (rows of cells.csv) are skipped on a re-run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  as3l bench --config usb_configs/digits/bench.yaml --quick\n"
               "  nohup as3l bench --config usb_configs/digits/bench.yaml > bench.log 2>&1 &\n"
               "  as3l bench --config usb_configs/digits/bench.yaml --status\n"
               "  as3l bench --config usb_configs/digits/bench.yaml --merge "
               "results/bench_digits_1perclass results/bench_digits_4perclass")
    b.add_argument("--config", "-c", required=True, help="bench YAML "
                   "(e.g. usb_configs/digits/bench.yaml)")
    b.add_argument("--quick", action="store_true",
                   help="the config's tiny `quick:` grid (minutes)")
    b.add_argument("--out", help="bench directory (default: results/bench_<name>)")
    b.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="run at most N new cells, then write the tables and stop")
    b.add_argument("--report-only", action="store_true",
                   help="only rebuild the tables and plots from the finished cells")
    b.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S",
                   help="run only these seeds (replaces the config's): split a grid over "
                        "processes, each with its own --out, then --merge them")
    b.add_argument("--status", action="store_true",
                   help="print each cell's state from the files under --out (done, training "
                        "at iteration N, started, not started) and whether a process is "
                        "writing it now; runs nothing and writes nothing there")
    b.add_argument("--merge", nargs="+", default=[], metavar="DIR",
                   help="import the finished cells of these bench directories (e.g. the "
                        "budget-split runs) into --out, then only write the tables and plots")
    b.set_defaults(func=_bench)


def _run(args) -> int:
    from ..pipeline import run_pipeline
    res = run_pipeline(args.config, out=args.out, force=args.force, log=_log)
    print()
    if res.get("awaiting_labels"):
        print(res["awaiting_labels"])
        return 0
    print(res["summary"])
    print(f"results in {res['root']}/ (summary.md, metrics.csv, plots)")
    return 0


def _bench(args) -> int:
    from ..bench import open_bench, run_bench
    if args.status:
        if args.merge or args.max_cells is not None or args.report_only:
            from ..errors import ParameterError
            raise ParameterError("only reads --out: it takes no --merge, --max-cells or "
                                 "--report-only", field="--status")
        bench = open_bench(args.config, quick=args.quick, out=args.out, seeds=args.seeds,
                           log=_log)
        if not bench.has_run():
            from ..errors import InputError
            raise InputError("not a bench directory (no cells.csv, priors.csv, shared/, "
                             "labels/ or cells/ here; nothing has run yet?)", path=bench.out)
        print(bench.status_text())
        return 0
    if args.max_cells is not None and args.max_cells < 0:
        from ..errors import ParameterError
        raise ParameterError(f"={args.max_cells} must be >= 0", field="--max-cells")
    if args.merge and (args.max_cells is not None or args.quick):
        from ..errors import ParameterError
        raise ParameterError("only writes the report: it takes no --max-cells or --quick",
                             field="--merge")
    res = run_bench(args.config, quick=args.quick, out=args.out, max_cells=args.max_cells,
                    report_only=args.report_only, merge=args.merge, seeds=args.seeds,
                    log=_log)
    print()
    print(res["text"])
    print(f"tables in {res['tables']}; {len(res['plots'])} plot(s) in {res['out']}/plots/")
    return 0


def _log(msg: str) -> None:
    print(msg, flush=True)
    sys.stdout.flush()
