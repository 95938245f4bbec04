"""Benchmark: the four LLM judges of MentalAlign-70k (Badawi et al., 2025) against clinical experts.

Runs `theraloop validate` on the benchmark with its protocol (system level = mean per generator,
each judge without its own model family's responses, 1,000 bootstrap resamples, seed 42) twice:
with theraloop's strict cleaning (cells that are empty, all zero, out of range or incomplete are
dropped and counted) and with the cleaning of the benchmark's own analysis script, whose
system-level ICCs are set beside the published table to check the reproduction.

    python bench/mentalalign_validate.py     # writes bench/results/mentalalign_validation.{json,md}
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# MentalBench-Align, Results/ICC Reliability Analysis.md (commit 72a5f2fd7305e879736da7a019f47730fa2512f8):
# system-level (ICC(C,1), ICC(A,1)) per judge and dimension, own family excluded.
PUBLISHED = {
    "claude": {"guidance": (0.881, 0.837), "informativeness": (0.915, 0.915), "relevance": (0.730, 0.743),
               "safety": (0.685, 0.597), "empathy": (0.906, 0.474), "helpfulness": (0.900, 0.742),
               "understanding": (0.791, 0.806)},
    "gpt-4o": {"guidance": (0.849, 0.475), "informativeness": (0.856, 0.681), "relevance": (0.532, 0.243),
               "safety": (0.480, 0.279), "empathy": (0.835, 0.288), "helpfulness": (0.800, 0.457),
               "understanding": (0.823, 0.485)},
    "gemini": {"guidance": (0.855, 0.682), "informativeness": (0.878, 0.877), "relevance": (0.306, 0.137),
               "safety": (0.377, 0.222), "empathy": (0.838, 0.380), "helpfulness": (0.734, 0.385),
               "understanding": (0.362, 0.180)},
    "o4-mini": {"guidance": (0.948, 0.786), "informativeness": (0.918, 0.908), "relevance": (0.342, 0.140),
                "safety": (0.259, 0.117), "empathy": (0.883, 0.499), "helpfulness": (0.871, 0.660),
                "understanding": (0.871, 0.592)},
}
PUBLISHED_NOTE = (
    "From the MentalBench-Align repository's results page (judges Claude-3.7-Sonnet, GPT-4o, Gemini-2.5-Flash, "
    "o4-mini). Their bootstrap draws each resample with its own seed and keeps only values in [0, 1], so their "
    "intervals are not comparable resample for resample with ours; the point estimates are."
)


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def _system_icc(validation, judge: str, dimension: str) -> tuple[float, float]:
    system = validation.judges[judge].agreement.dimensions[dimension].system
    return system.icc["C,1"].estimate, system.icc["A,1"].estimate


def _reproduction(as_published) -> dict:
    rows = {}
    for judge, dimensions in PUBLISHED.items():
        for dimension, (published_c, published_a) in dimensions.items():
            ours_c, ours_a = _system_icc(as_published, judge, dimension)
            rows.setdefault(judge, {})[dimension] = {
                "published": {"C,1": published_c, "A,1": published_a}, "ours": {"C,1": ours_c, "A,1": ours_a},
                "abs_difference": {"C,1": abs(ours_c - published_c), "A,1": abs(ours_a - published_a)}}
    differences = [value for judge in rows.values() for row in judge.values() for value in row["abs_difference"].values()]
    return {"rows": rows, "max_abs_difference": max(differences), "note": PUBLISHED_NOTE}


def _spread(validation, judge: str) -> str:
    import numpy as np

    spreads = {dimension: float(np.std([means.human for means in agreement.system.means.values()]))
               for dimension, agreement in validation.judges[judge].agreement.dimensions.items()}
    return ", ".join(f"{dimension} {spread:.2f}" for dimension, spread in sorted(spreads.items(), key=lambda kv: kv[1]))


def _markdown(report: dict, strict, as_published) -> str:
    from theraloop.judge._validate import render_markdown

    number = "{:.3f}".format
    lines = ["# MentalAlign-70k: LLM judges against clinical experts", "",
             f"`{report['command']}` ({report['seconds']:.0f} s). Protocol: system level = mean score per "
             "generator, each judge without its own model family's responses (claude: claude, gpt-4o: gpt4o, "
             "gemini: gemini, o4-mini: gpt4omini), 95% percentile bootstrap over systems, 1,000 resamples, seed 42.",
             "", "## Reproduction of the published system-level ICCs", "",
             "Same cleaning as the benchmark's analysis script (all-zero and out-of-range human cells kept). "
             f"Largest absolute difference from the published table: {report['reproduction']['max_abs_difference']:.3f}.",
             "", "| judge | dimension | published C,1 | ours C,1 | published A,1 | ours A,1 | strict C,1 | strict A,1 |",
             "|---|---|---|---|---|---|---|---|"]
    for judge, dimensions in report["reproduction"]["rows"].items():
        for dimension, row in dimensions.items():
            strict_c, strict_a = _system_icc(strict, judge, dimension)
            lines.append(f"| {judge} | {dimension} | {number(row['published']['C,1'])} | {number(row['ours']['C,1'])} "
                         f"| {number(row['published']['A,1'])} | {number(row['ours']['A,1'])} "
                         f"| {number(strict_c)} | {number(strict_a)} |")
    human_drops = strict.data["dropped_cells"]["human"]
    published_drops = as_published.data["dropped_cells"]["human"]
    lines += ["", PUBLISHED_NOTE, "",
              "The strict columns use theraloop's cleaning, which drops whole human cells by reason ("
              + ", ".join(f"{reason} {count}" for reason, count in human_drops.items())
              + "); the benchmark's reading drops only "
              + ", ".join(f"{reason} {count}" for reason, count in published_drops.items())
              + " and scores the rest as written, zeros included, which pulls a generator's mean down. That "
              "matters most where the generators' human means are closest together: standard deviation of the "
              "human system means (claude's nine systems) " + _spread(strict, "claude") + ".", ""]
    body = render_markdown(strict, title="Strict cleaning: full results").split("\n")
    lines += ["#" + line if line.startswith("#") else line for line in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding mentalalign/")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "mentalalign_validation.json")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from theraloop.io import write_json
    from theraloop.judge._validate import ValidateConfig, validate_mentalalign
    from theraloop.manifest import package_versions

    command = "python bench/mentalalign_validate.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    strict = validate_mentalalign(args.data, ValidateConfig(n_boot=args.n_boot, seed=args.seed))
    as_published = validate_mentalalign(args.data, ValidateConfig(n_boot=args.n_boot, seed=args.seed,
                                                                  cleaning="as_published"))
    report = {
        "benchmark": "MentalAlign-70k: four LLM judges against clinical experts (system and response level)",
        "command": command.strip(),
        "seconds": time.perf_counter() - started,
        "versions": package_versions(),
        "reproduction": _reproduction(as_published),
        "strict": strict.model_dump(mode="json"),
        "as_published_data": as_published.data,
    }
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(_markdown(report, strict, as_published) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}; largest |ours - published| "
          f"{report['reproduction']['max_abs_difference']:.3f}")
    return report


if __name__ == "__main__":
    main()
