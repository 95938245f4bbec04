"""Benchmark: an audit of EPITOME's human levels: how much of each level the text can carry.

    python bench/epitome_label_audit.py   # writes bench/results/epitome_label_audit.json (seconds)

It reads the five random-rows fold judges that `python bench/epitome_paper_protocol.py` trains (the final
recipe; each response is scored by the one judge that never saw it: out-of-fold class probabilities for all
3,023 responses) and asks, per mechanism:

- `position`: do the levels depend on where a response sits in the released files (rows in file order, cut
  into tenths)? Pearson chi-square test of independence of tenth and level; the same on tenths of the
  responses' Reddit ids (base-36, increasing with posting time), to tell file order from time.
- `position_beyond_text`: does the tenth predict a level beyond what the judge reads in the text? For each
  level k, a logistic regression of "the human level is k" on the judge's out-of-fold log-odds of k, with and
  without the nine indicators of the tenth; likelihood-ratio test. If the text explained the position
  effect, the indicators would add nothing.
- `repeated_annotations`: responses on more than one row were annotated again: how often the two
  annotations agree (confusion, exact agreement, Cohen's kappa), beside the judge's out-of-fold agreement
  with each on the same responses.

A level whose frequency moves with the file position but not with the judge's reading, and that a second
annotation does not repeat, is bounded by the annotation rather than by the model.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from epitome_judge import (  # noqa: E402  (bench/ is not a package)
    FINAL,
    MECHANISMS,
    REPO_ROOT,
    _default_data_root,
    load_run,
    load_verified_epitome,
)
from epitome_paper_protocol import random_row_folds  # noqa: E402

PARTS = 10
LEVELS = (0, 1, 2)
PROBABILITY_FLOOR = 1e-6  # keeps the log-odds finite where the judge is certain


def position_parts(count: int, parts: int = PARTS) -> np.ndarray:
    """The part (0 .. parts-1) of each of `count` rows in file order, cut into parts of near-equal size."""
    return np.arange(count) * parts // count


def time_parts(reddit_ids: Sequence[str], parts: int = PARTS) -> np.ndarray:
    """The part of each response when ordered by its Reddit id (base 36, assigned in posting order)."""
    order = np.argsort([int(reddit_id, 36) for reddit_id in reddit_ids], kind="stable")
    ranks = np.empty(len(order), dtype=int)
    ranks[order] = np.arange(len(order))
    return position_parts(len(order), parts)[ranks]


def level_table(levels: Sequence[int], parts: np.ndarray, n_parts: int = PARTS) -> np.ndarray:
    """Counts, levels x parts."""
    table = np.zeros((len(LEVELS), n_parts), dtype=int)
    for level, part in zip(levels, parts, strict=True):
        table[int(level), int(part)] += 1
    return table


def chi_square(table: np.ndarray) -> dict:
    """Pearson chi-square test of independence (levels never seen are left out)."""
    from scipy.stats import chi2_contingency

    observed = table[table.sum(axis=1) > 0]
    statistic, p_value, dof, _ = chi2_contingency(observed, correction=False)
    return {"chi_square": round(float(statistic), 2), "dof": int(dof), "p_value": float(p_value)}


def indicators(parts: np.ndarray, n_parts: int = PARTS) -> np.ndarray:
    """One column per part but the first (the reference)."""
    return (parts[:, None] == np.arange(1, n_parts)[None, :]).astype(float)


def likelihood_ratio_test(outcome: np.ndarray, base: np.ndarray, extra: np.ndarray) -> dict:
    """Logistic regression of a 0/1 outcome on an intercept and `base` columns, against the same plus `extra`
    columns: likelihood-ratio statistic, its degrees of freedom and p-value (chi-square)."""
    import statsmodels.api as sm
    from scipy.stats import chi2

    def log_likelihood(columns: np.ndarray) -> float:
        design = sm.add_constant(columns, has_constant="add")
        return float(sm.Logit(outcome, design).fit(disp=0, maxiter=200).llf)

    statistic = 2 * (log_likelihood(np.column_stack([base, extra])) - log_likelihood(base))
    dof = extra.shape[1]
    return {"likelihood_ratio": round(statistic, 2), "dof": dof, "p_value": float(chi2.sf(statistic, dof))}


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(clipped / (1 - clipped))


def position_beyond_text(levels: np.ndarray, probabilities: np.ndarray, parts: np.ndarray) -> dict:
    """Per level: the likelihood-ratio test of the part indicators over the judge's log-odds, and the
    per-part human rate beside the judge's mean probability."""
    result = {}
    for level in LEVELS:
        outcome = (levels == level).astype(float)
        judged = probabilities[:, level]
        result[str(level)] = {
            **likelihood_ratio_test(outcome, log_odds(judged)[:, None], indicators(parts)),
            "human_rate_by_part": [round(float(outcome[parts == part].mean()), 4) for part in range(PARTS)],
            "judge_mean_probability_by_part": [round(float(judged[parts == part].mean()), 4) for part in range(PARTS)],
        }
    return result


def repeated_annotations(items: Sequence, oof: dict[str, dict], mechanism: str) -> dict:
    """Agreement of the second annotation with the first on responses annotated more than once, and of the
    judge (most probable level, out of fold) with each, as the benchmarks measure it (agreement_metrics: macro-F1
    over the levels either side uses; confusion rows are the reference) plus unweighted Cohen's kappa."""
    from sklearn.metrics import cohen_kappa_score

    from theraloop.judge._encoder import agreement_metrics

    first, second, judged = [], [], []
    for item in items:
        for other in item.meta.get("other_annotations", []):
            first.append(int(item.human_scores[mechanism]))
            second.append(int(other[mechanism]))
            judged.append(int(oof[item.id]["levels"][mechanism]))
    first, second, judged = map(np.array, (first, second, judged))

    def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
        metrics = agreement_metrics(reference, other, LEVELS)
        return {"exact": round(metrics["accuracy"], 4),
                "cohen_kappa": round(float(cohen_kappa_score(reference, other, labels=list(LEVELS))), 4),
                "macro_f1": round(metrics["macro_f1"], 4), "confusion": metrics["confusion"]}

    return {"pairs": len(first),
            "annotations": agreement(first, second),
            "judge_with_first": agreement(first, judged),
            "judge_with_second": agreement(second, judged),
            "first_at_level_1": int((first == 1).sum()),
            "level_1_repeated": int(((first == 1) & (second == 1)).sum())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "epitome_label_audit.json")
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "bench-epitome",
                        help="the random-rows fold runs of bench/epitome_paper_protocol.py")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from theraloop.io import write_json

    hashes, items = load_verified_epitome(args.data, parser)
    oof: dict[str, dict] = {}
    for k, fold in enumerate(random_row_folds(items)):
        saved = load_run(f"random-rows/fold{k}", args.runs, *fold, FINAL, 0)
        if saved is None:
            parser.error(f"{args.runs / f'random-rows/fold{k}'} holds no finished run for this data: run "
                         f"`python bench/epitome_paper_protocol.py --only random-rows/fold{k}` first")
        oof.update({prediction["id"]: prediction for prediction in saved["predictions"]})

    # load_epitome keeps the files' row order (a response's first row), so an item's index is its position.
    parts = position_parts(len(items))
    by_time = time_parts([item.id for item in items])
    result = {
        "benchmark": "EPITOME label audit: file position, the final judge's out-of-fold reading, repeated annotations",
        "command": "python bench/epitome_label_audit.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "data": {"sha256": hashes, "responses": len(items)},
        "judge": "final recipe, 5 random-rows folds (bench/epitome_paper_protocol.py), out of fold",
        "parts": PARTS,
        "mechanisms": {},
    }
    for mechanism in MECHANISMS:
        levels = np.array([int(item.human_scores[mechanism]) for item in items])
        probabilities = np.array([oof[item.id]["probabilities"][mechanism] for item in items])
        table, time_table = level_table(levels, parts), level_table(levels, by_time)
        result["mechanisms"][mechanism] = {
            "position": {"levels_by_part": table.tolist(), **chi_square(table)},
            "reddit_time": {"levels_by_part": time_table.tolist(), **chi_square(time_table)},
            "position_beyond_text": position_beyond_text(levels, probabilities, parts),
            "repeated_annotations": repeated_annotations(items, oof, mechanism),
        }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    for mechanism, audit in result["mechanisms"].items():
        beyond = audit["position_beyond_text"]
        repeated = audit["repeated_annotations"]
        print(f"{mechanism}: position chi2 p={audit['position']['p_value']:.2g} (Reddit time "
              f"p={audit['reddit_time']['p_value']:.2g}); beyond the judge's reading, p by level "
              + ", ".join(f"{level} {beyond[level]['p_value']:.2g}" for level in beyond)
              + f"; repeated annotations agree {repeated['annotations']['exact']} (kappa "
                f"{repeated['annotations']['cohen_kappa']}), level 1 repeated {repeated['level_1_repeated']} of "
                f"{repeated['first_at_level_1']}")
    return result


if __name__ == "__main__":
    main()
