"""Benchmark: calibrating the four MentalAlign-70k LLM judges to the clinicians, measured on held-out humans.

Per judge and dimension, each map (isotonic, quantile, linear) is fitted on a seeded half of the
conversations and judged on the other half, before and after, at response level and at system level
(mean per generator): bias and MAE (judge - human), ICC(A,1) and ICC(C,1). `auto` picks a map per cell
by cross-validation on the fit half only. Goal per cell: held-out |bias| < 0.1 and response-level ICC(A,1)
not below the uncalibrated value. Each judge is scored without its own model family's responses.

    python bench/calibration.py          # writes bench/results/calibration.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("isotonic", "quantile", "linear", "auto")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MentalAlign folder (default: the shared one)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "calibration.json")
    parser.add_argument("--seed", type=int, default=42, help="seed of the conversation split and of auto's folds")
    args = parser.parse_args(argv)

    from theraloop.data import find_dataset
    from theraloop.io import write_json
    from theraloop.judge._validate import (
        ValidateConfig,
        calibration_study,
        mentalalign_conversation,
        mentalalign_inputs,
    )
    from theraloop.manifest import package_versions

    root = find_dataset("mentalalign", args.data)
    started = time.perf_counter()
    inputs, provenance = mentalalign_inputs(root, ValidateConfig())
    studies = {method: calibration_study(inputs, method, seed=args.seed, group_of=mentalalign_conversation)
               for method in METHODS}
    seconds = time.perf_counter() - started
    auto = studies["auto"]
    table = {}
    for judge, cells in auto.cells.items():
        for dimension, cell in cells.items():
            table[f"{judge}/{dimension}"] = {
                "n_fit": cell.n_fit, "n_held_out": cell.response["none"].n,
                "before": {"response": cell.response["none"].model_dump(), "system": cell.system["none"].model_dump()},
                "after": {name: {"response": cell.response[name].model_dump(),
                                 "system": cell.system[name].model_dump()} for name in ("isotonic", "quantile", "linear")},
                "auto_chosen": cell.method, "auto_out_of_fold_icc_a1": cell.selection,
                "goal_met": {method: studies[method].cells[judge][dimension].meets_goal for method in METHODS}}
    report = {
        "benchmark": "MentalAlign-70k: calibration of four LLM judges to clinicians, fitted on half of the "
                     "conversations and measured on the other half",
        "command": "python bench/calibration.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "data": {key: provenance[key] for key in ("root", "cleaning", "sha256", "conversations")},
        "split": auto.split, "seed": args.seed,
        "goal": "per judge x dimension: held-out response-level |bias| < 0.1 and ICC(A,1) >= uncalibrated",
        "goal_summary": {method: study.goal_summary() for method, study in studies.items()},
        "cells": table,
        "units": "scores on the 1-5 scale; bias and MAE are judge - human; system level = mean per generator "
                 "on the held-out half",
        "wall_seconds": round(seconds, 1),
        "versions": package_versions(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    for method, summary in report["goal_summary"].items():
        print(f"  {method:>8}: goal met in {summary['meet_goal']} of {summary['cells']} cells "
              f"(|bias| < 0.1 in {summary['bias_below_0.1']}, ICC(A,1) kept in "
              f"{summary['icc_a1_not_below_uncalibrated']}); missed {', '.join(summary['missed']) or 'none'}")
    return report


if __name__ == "__main__":
    main()
