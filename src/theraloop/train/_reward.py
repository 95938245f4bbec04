"""Reward models, one per criterion: a MiniLM cross-encoder reads (prompt, response) and a linear head
on its mean-pooled output gives a scalar reward, trained on persona preference pairs with the
(pair-weighted) Bradley-Terry loss -log sigmoid(r_chosen - r_rejected).

Raw rewards have an arbitrary offset and scale per model, so every model stores the mean and
standard deviation of its rewards on the responses of its training pairs; `standardise` maps raw
rewards to that z-scale, and `compute_margins` (the MODPO margin term) uses standardised rewards
only, so criteria with differently scaled models can be weighed against each other.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from pydantic import BaseModel, Field

from theraloop.config import StrictModel
from theraloop.io import InputError, JSONLAppender, read_jsonl, sha256_json, write_json
from theraloop.judge._onnx import (
    ONNX_BATCH_SIZE,
    ONNX_FILE,
    OnnxPairModel,
    check_runtime,
    export_pair_model,
    runtime_tag,
)
from theraloop.prefs import PreferencePair

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_VERSION = 1
SPEC_FILE = "reward_model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"
BUNDLED_BACKBONE = "all-MiniLM-L6-v2"


class RewardConfig(StrictModel):
    """How to train one criterion's reward model. Defaults suit all-MiniLM-L6-v2 on 2 CPU cores."""

    criterion: str | None = Field(None, description="train on pairs of this criterion only (None: all pairs)")
    backbone: str | None = Field(None, description="local transformers encoder folder with a fast tokenizer; "
                                                   "default: the bundled all-MiniLM-L6-v2")
    max_length: int = Field(256, ge=16, le=512, description="tokens per (prompt, response) pair")
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1, description="pairs per optimiser step")
    eval_batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(3e-5, gt=0, description="for the encoder")
    head_learning_rate: float = Field(1e-3, gt=0, description="for the freshly initialised head")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    use_pair_weights: bool = Field(True, description="weight each pair's loss by its vote-gap weight")
    dev_fraction: float = Field(0.2, gt=0, lt=1, description="pairs held out (grouped by question) without a dev set")
    optuna_trials: int = Field(0, ge=0, description="Optuna trials over learning rate and epochs (0: no search)")
    optuna_learning_rates: tuple[float, float] = (1e-5, 2e-4)
    optuna_max_epochs: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Pure functions: the loss, the metric, the input format.


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of -log sigmoid(r_chosen - r_rejected) (weights default to 1)."""
    import torch.nn.functional as F

    losses = -F.logsigmoid(chosen - rejected)
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen response scores higher; an exact tie counts one half."""
    chosen, rejected = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    if len(chosen) == 0:
        return math.nan
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def reward_input(prompt: str, response: str) -> tuple[str, str]:
    """The one input format of training and scoring: the (prompt, response) text pair, encoded as
    [CLS] prompt [SEP] response [SEP] with the prompt cut from its start when too long."""
    return prompt.strip(), response.strip()


# ---------------------------------------------------------------------------------------------
# The model.


def _build_net(backbone: Any) -> nn.Module:
    from torch import nn

    from theraloop.judge._encoder import mean_pooled

    class RewardNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = nn.Linear(backbone.config.hidden_size, 1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            return self.head(mean_pooled(self.backbone, input_ids, attention_mask, token_type_ids)).squeeze(-1)

    return RewardNet()


class RewardModel:
    """A trained reward model for one criterion: raw `score`, `standardise`, save/load a folder. Scores
    with the torch net, or (loaded with runtime="onnx") with its exported ONNX graph."""

    def __init__(self, net: nn.Module | None, tokenizer: Any, spec: dict[str, Any], onnx: OnnxPairModel | None = None):
        from theraloop.judge._encoder import PairTokenizer

        if (net is None) == (onnx is None):
            raise ValueError("a reward model scores with a torch net or an ONNX session: give exactly one")
        self.net = net.eval() if net is not None else None
        self.onnx = onnx
        self.tokenizer = tokenizer
        self.spec = spec
        self.pair_tokenizer = PairTokenizer(tokenizer, spec["max_length"])

    @property
    def criterion(self) -> str | None:
        return self.spec.get("criterion")

    @property
    def mean(self) -> float:
        return float(self.spec["standardisation"]["mean"])

    @property
    def sd(self) -> float:
        return float(self.spec["standardisation"]["sd"])

    @property
    def fingerprint(self) -> str:
        """Identifies these weights and this standardisation (set when training finishes), and the
        ONNX runtime when scoring with it, so cached margins of the two runtimes never mix."""
        return self.spec["fingerprint"] + (runtime_tag(self.onnx.spec) if self.onnx is not None else "")

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list:
        pairs = [reward_input(prompt, response) for prompt, response in zip(prompts, responses, strict=True)]
        return self.pair_tokenizer.encode([p for p, _ in pairs], [r for _, r in pairs])

    def forward_encoded(self, encoded: Sequence) -> torch.Tensor:
        return self.net(**self.pair_tokenizer.collate(encoded))

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64,
              standardised: bool = False) -> np.ndarray:
        """Rewards of (prompt, response) pairs in input order: raw, or standardised with `standardise`;
        `batch_size` applies to torch (ONNX scores one pair at a time, see ONNX_BATCH_SIZE)."""
        if self.onnx is not None:
            batch_size = ONNX_BATCH_SIZE
        encoded = self.encode(prompts, responses)
        order = sorted(range(len(encoded)), key=lambda index: len(encoded[index].ids))
        raw = np.zeros(len(encoded))
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        encoded_batches = [[encoded[index] for index in batch] for batch in batches]
        if self.onnx is not None:
            scored = (outputs[0].astype(float) for outputs in self.onnx.map(self.pair_tokenizer.collate_numpy,
                                                                            encoded_batches))
        else:
            scored = (self._score_batch_torch(batch) for batch in encoded_batches)
        for batch, rewards in zip(batches, scored, strict=True):
            raw[batch] = rewards
        return self.standardise(raw) if standardised else raw

    def _score_batch_torch(self, batch: Sequence) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.inference_mode():
            return self.forward_encoded(batch).double().numpy()

    def standardise(self, raw: np.ndarray | Sequence[float]) -> np.ndarray:
        """(raw - mean) / sd with the mean and sd of this model's rewards on its training responses."""
        return (np.asarray(raw, dtype=float) - self.mean) / self.sd

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        if self.net is None:
            raise ValueError("an ONNX-loaded reward model cannot be saved; save the torch model it was exported from")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # New weights make an earlier export stale: drop it rather than score with the old graph.
        (path / ONNX_FILE).unlink(missing_ok=True)
        self.spec.pop("onnx", None)
        self.net.backbone.save_pretrained(path / BACKBONE_DIR)
        self.tokenizer.save_pretrained(path / BACKBONE_DIR)
        save_file({name: tensor.detach().contiguous() for name, tensor in self.net.head.state_dict().items()},
                  str(path / HEAD_FILE))
        write_json(path / SPEC_FILE, self.spec)
        return path

    def export_onnx(self, path: str | Path, quantize: bool = True) -> Path:
        """Export the saved model in `path` to path/model.onnx (int8 dynamic quantisation by default)
        and record it in the spec, so `load(path, runtime="onnx")` scores without torch."""
        if self.net is None:
            raise ValueError("export from the torch model (load it with runtime='torch')")
        path = Path(path)
        if not (path / SPEC_FILE).is_file():
            raise InputError(f"{path}: save the reward model there before exporting it")
        self.spec["onnx"] = export_pair_model(self.net, self.pair_tokenizer, path, ["reward"], quantize)
        write_json(path / SPEC_FILE, self.spec)
        return path / ONNX_FILE

    @classmethod
    def load(cls, path: str | Path, runtime: str = "torch", threads: int | None = None) -> RewardModel:
        """Load a reward model folder; runtime "onnx" scores with its exported graph (see export_onnx)."""
        from transformers import AutoTokenizer

        path = Path(path)
        spec_path = path / SPEC_FILE
        if not spec_path.is_file():
            raise InputError(f"{path}: not a reward model folder (no {SPEC_FILE}); train one with "
                             "`theraloop reward train`")
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT_VERSION:
            raise InputError(f"{spec_path}: format {spec.get('format')!r}, this version reads {FORMAT_VERSION}")
        tokenizer = AutoTokenizer.from_pretrained(path / BACKBONE_DIR)
        if check_runtime(runtime) == "onnx":
            if "onnx" not in spec:
                raise InputError(f"{path}: no ONNX export; make one with RewardModel.export_onnx")
            return cls(None, tokenizer, spec, onnx=OnnxPairModel(path, spec["onnx"], threads))
        from safetensors.torch import load_file
        from transformers import AutoModel

        net = _build_net(AutoModel.from_pretrained(path / BACKBONE_DIR))
        net.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return cls(net, tokenizer, spec)


# ---------------------------------------------------------------------------------------------
# Training.


def read_pairs(path: str | Path, criterion: str | None = None) -> list[PreferencePair]:
    """Preference pairs from a TRL-style JSONL; with `criterion`, only pairs labelled with it (or unlabelled)."""
    pairs = read_jsonl(path, PreferencePair)
    if criterion is not None:
        pairs = [pair for pair in pairs if pair.criterion in (None, criterion)]
    if not pairs:
        raise InputError(f"{path}: no preference pairs" + (f" for criterion '{criterion}'" if criterion else ""))
    return pairs


class RewardTrainingResult(NamedTuple):
    model: RewardModel
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


def _group_of(pair: PreferencePair) -> str:
    return pair.question_id or pair.prompt


def _pair_scores(model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    scores = model.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                         batch_size)
    return scores[:len(pairs)], scores[len(pairs):]


def _evaluate(model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int) -> dict[str, Any]:
    import torch

    chosen, rejected = _pair_scores(model, pairs, batch_size)
    loss = bradley_terry_loss(torch.tensor(chosen), torch.tensor(rejected)).item() if len(pairs) else math.nan
    return {"n": len(pairs), "pairwise_accuracy": pairwise_accuracy(chosen, rejected), "bt_loss": loss,
            "mean_margin": float(np.mean(chosen - rejected)) if len(pairs) else math.nan}


def _fit(train: Sequence[PreferencePair], config: RewardConfig, learning_rate: float, epochs: int,
         progress: bool) -> tuple[RewardModel, list[dict[str, Any]]]:
    import torch
    from tqdm.auto import tqdm

    from theraloop.judge._encoder import load_backbone, seed_everything

    seed_everything(config.seed)
    backbone, tokenizer, backbone_name, backbone_source = load_backbone(config.backbone)
    spec: dict[str, Any] = {"format": FORMAT_VERSION, "criterion": config.criterion, "max_length": config.max_length,
                            "backbone_name": backbone_name, "backbone_source": backbone_source,
                            "config": config.model_dump(mode="json")}
    model = RewardModel(_build_net(backbone), tokenizer, spec)
    net = model.net
    chosen = model.encode([p.prompt for p in train], [p.chosen for p in train])
    rejected = model.encode([p.prompt for p in train], [p.rejected for p in train])
    weights = np.array([p.weight if config.use_pair_weights else 1.0 for p in train])

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(config.warmup_ratio * total_steps)
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in net.named_parameters():
        decays = name.endswith(".weight") and "norm" not in name.lower()  # not biases or LayerNorms
        groups.setdefault((name.startswith("head."), decays), []).append(parameter)
    optimizer = torch.optim.AdamW([
        {"params": params, "lr": config.head_learning_rate if is_head else learning_rate,
         "weight_decay": config.weight_decay if decays else 0.0}
        for (is_head, decays), params in groups.items()])

    def schedule(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history = []
    with tqdm(total=total_steps, desc=f"training reward model ({config.criterion or 'all'})", disable=not progress,
              dynamic_ncols=True) as bar:
        for epoch in range(1, epochs + 1):
            net.train()
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train))
            losses = []
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size].tolist()
                # Chosen and rejected go through the encoder in one batch, so both see the same dropout regime.
                rewards = model.forward_encoded([chosen[i] for i in batch] + [rejected[i] for i in batch])
                loss = bradley_terry_loss(rewards[:len(batch)], rewards[len(batch):],
                                          torch.tensor(weights[batch], dtype=rewards.dtype))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
    net.eval()
    return model, history


def _finish(model: RewardModel, train: Sequence[PreferencePair], config: RewardConfig) -> None:
    """Fit the standardisation on the training pairs' distinct responses and fix the fingerprint."""
    seen = {(p.prompt, text) for p in train for text in (p.chosen, p.rejected)}
    prompts, responses = zip(*sorted(seen), strict=True)
    raw = model.score(prompts, responses, config.eval_batch_size)
    sd = float(np.std(raw, ddof=1)) if len(raw) > 1 else 0.0
    model.spec["standardisation"] = {"mean": float(np.mean(raw)), "sd": sd if sd > 1e-8 else 1.0,
                                     "n_responses": len(raw)}
    digest = hashlib.sha256(sha256_json([model.spec["standardisation"], model.spec["data_fingerprint"]]).encode())
    for tensor in model.net.head.state_dict().values():
        digest.update(tensor.detach().numpy().tobytes())
    model.spec["fingerprint"] = digest.hexdigest()[:16]


def dev_split(pairs: Sequence[PreferencePair], config: RewardConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The train and dev parts `train_reward_model` uses without a dev set: `dev_fraction` of the pairs, grouped by
    question (or prompt) so no question is in both; either part may come out empty when there are too few."""
    from theraloop.data import grouped_split

    train, dev = grouped_split(pairs, [1 - config.dev_fraction, config.dev_fraction], config.seed, _group_of)
    return train, dev


def train_reward_model(train: Sequence[PreferencePair], dev: Sequence[PreferencePair] | None = None,
                       config: RewardConfig | None = None, out_dir: str | Path | None = None, progress: bool = True,
                       log: Callable[[str], None] | None = None) -> RewardTrainingResult:
    """Train on `train`, report held-out pairwise accuracy on `dev` (default: `dev_fraction` of the
    pairs, grouped by question so no question is in both). With `optuna_trials`, a TPE search over
    the encoder learning rate and the epochs picks the trial with the lowest dev Bradley-Terry loss."""
    import torch

    config = config or RewardConfig()
    say = log or (lambda message: None)
    train = [p for p in train if config.criterion is None or p.criterion in (None, config.criterion)]
    if dev is None:
        train, dev = dev_split(train, config)
    if not train or not dev:
        raise InputError(f"too few preference pairs (or questions) to train and hold out: train {len(train)}, "
                         f"dev {len(dev)}")
    if config.threads:
        torch.set_num_threads(config.threads)

    search: dict[str, Any] | None = None
    if config.optuna_trials:
        import optuna

        best: dict[str, Any] = {}

        def objective(trial: optuna.Trial) -> float:
            learning_rate = trial.suggest_float("learning_rate", *config.optuna_learning_rates, log=True)
            epochs = trial.suggest_int("epochs", 1, config.optuna_max_epochs)
            model, history = _fit(train, config, learning_rate, epochs, progress)
            dev_metrics = _evaluate(model, dev, config.eval_batch_size)
            say(f"trial {trial.number}: lr {learning_rate:.2e}, epochs {epochs}: dev accuracy "
                f"{dev_metrics['pairwise_accuracy']:.3f}, loss {dev_metrics['bt_loss']:.4f}")
            if not best or dev_metrics["bt_loss"] < best["loss"]:
                best.update(loss=dev_metrics["bt_loss"], model=model, history=history)
            return dev_metrics["bt_loss"]

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed))
        study.optimize(objective, n_trials=config.optuna_trials)
        model, history = best["model"], best["history"]
        search = {"trials": [{"number": t.number, "params": t.params, "dev_bt_loss": t.value} for t in study.trials],
                  "best_params": study.best_params}
        model.spec["config"].update(learning_rate=study.best_params["learning_rate"], epochs=study.best_params["epochs"])
    else:
        model, history = _fit(train, config, config.learning_rate, config.epochs, progress)

    model.spec["data_fingerprint"] = sha256_json([[p.prompt, p.chosen, p.rejected, p.weight] for p in train])[:16]
    _finish(model, train, config)
    metrics = {"train": _evaluate(model, train, config.eval_batch_size),
               "dev": _evaluate(model, dev, config.eval_batch_size),
               "standardisation": model.spec["standardisation"]}
    if search:
        metrics["optuna"] = search
    model.spec["training"] = {"n_train": len(train), "n_dev": len(dev), "history": history, **metrics}
    say(f"held-out pairwise accuracy {metrics['dev']['pairwise_accuracy']:.3f} on {len(dev)} pairs "
        f"(train {metrics['train']['pairwise_accuracy']:.3f})")
    if out_dir:
        model.save(out_dir)
        write_json(Path(out_dir) / "metrics.json", metrics)
    return RewardTrainingResult(model, metrics, history)


# ---------------------------------------------------------------------------------------------
# MODPO margins.


class PairMargins(BaseModel):
    """Standardised reward margins r_j(x, y_chosen) - r_j(x, y_rejected) of one pair, for every
    criterion j other than the objective being optimised."""

    key: str
    question_id: str | None = None
    objective: str
    margins: dict[str, float]
    models: dict[str, str] = Field(description="criterion -> reward model fingerprint")


def pair_key(pair: PreferencePair) -> str:
    return sha256_json([pair.prompt, pair.chosen, pair.rejected])[:20]


def compute_margins(reward_models: Mapping[str, RewardModel], pairs: Sequence[PreferencePair], objective: str,
                    cache_path: str | Path | None = None, batch_size: int = 64,
                    progress: bool = True) -> list[PairMargins]:
    """Per pair, the standardised margins of every reward model but the objective's (r_-k in MODPO),
    in pair order. With `cache_path`, margins are appended there per batch and reused on the next call
    when the pair and the models' fingerprints match."""
    from tqdm.auto import tqdm

    others = {criterion: model for criterion, model in sorted(reward_models.items()) if criterion != objective}
    if not others:
        raise ValueError(f"MODPO needs at least one reward model besides the objective '{objective}'")
    fingerprints = {criterion: model.fingerprint for criterion, model in others.items()}
    appender = JSONLAppender(cache_path) if cache_path else None
    cached: dict[str, PairMargins] = {}
    if appender:
        for record in appender.existing:
            margins = PairMargins.model_validate(record)
            if margins.objective == objective and margins.models == fingerprints:
                cached[margins.key] = margins
    keys = [pair_key(pair) for pair in pairs]
    todo = sorted({index for index, key in enumerate(keys) if key not in cached})
    try:
        with tqdm(total=len(todo), desc=f"reward margins (objective {objective})", disable=not progress or not todo,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(todo), batch_size):
                batch = [pairs[index] for index in todo[start:start + batch_size]]
                per_criterion = {}
                for criterion, model in others.items():
                    chosen, rejected = _pair_scores(model, batch, batch_size)
                    per_criterion[criterion] = model.standardise(chosen) - model.standardise(rejected)
                for row, pair in enumerate(batch):
                    key = pair_key(pair)
                    if key in cached:  # the same pair twice in the input
                        continue
                    cached[key] = PairMargins(key=key, question_id=pair.question_id, objective=objective,
                                              margins={c: float(values[row]) for c, values in per_criterion.items()},
                                              models=fingerprints)
                    if appender:
                        appender.write(cached[key])
                bar.update(len(batch))
    finally:
        if appender:
            appender.close()
    return [cached[key] for key in keys]


__all__ = [
    "PairMargins",
    "RewardConfig",
    "RewardModel",
    "RewardTrainingResult",
    "bradley_terry_loss",
    "compute_margins",
    "pair_key",
    "pairwise_accuracy",
    "read_pairs",
    "reward_input",
    "train_reward_model",
]
