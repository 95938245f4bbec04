"""Alignment training: preference losses as pure functions, per-criterion reward models, LoRA soups,
SFT/DPO/MODPO/joint trainers on TRL (`MODPOTrainer`, `JointDPOTrainer`: DPOTrainer subclasses).

The losses need only torch; the soup and the trainers also need transformers and peft
(`pip install theraloop[train]`).

Names load lazily: `theraloop.train` is imported by the CLI, which must start without torch.
"""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "AlignConfig": "theraloop.train._pipeline",
    "AlignSummary": "theraloop.train._pipeline",
    "bradley_terry_loss": "theraloop.train._reward",
    "build_trainer": "theraloop.train._policy",
    "compute_margins": "theraloop.train._reward",
    "dpo_loss": "theraloop.train._losses",
    "dpo_margin": "theraloop.train._losses",
    "DPOTrainConfig": "theraloop.train._policy",
    "joint_dpo_loss": "theraloop.train._losses",
    "JointDPOTrainer": "theraloop.train._trl",
    "JointPair": "theraloop.train._policy",
    "JointTrainConfig": "theraloop.train._policy",
    "lora_soup": "theraloop.train._soup",
    "make_soup": "theraloop.train._pipeline",
    "modpo_loss": "theraloop.train._losses",
    "MODPOPair": "theraloop.train._policy",
    "MODPOTrainConfig": "theraloop.train._policy",
    "MODPOTrainer": "theraloop.train._trl",
    "pair_key": "theraloop.train._reward",
    "PairMargins": "theraloop.train._reward",
    "pairwise_accuracy": "theraloop.train._reward",
    "peak_rss_mb": "theraloop.train._policy",
    "PolicySettings": "theraloop.train._pipeline",
    "PolicyTrainConfig": "theraloop.train._policy",
    "PreferencePair": "theraloop.train._policy",
    "PretokenizedDPOTrainer": "theraloop.train._trl",
    "read_pairs": "theraloop.train._reward",
    "reward_input": "theraloop.train._reward",
    "RewardConfig": "theraloop.train._reward",
    "RewardModel": "theraloop.train._reward",
    "RewardTrainingResult": "theraloop.train._reward",
    "run_alignment_pipeline": "theraloop.train._pipeline",
    "sequence_logps": "theraloop.train._losses",
    "SFTExample": "theraloop.train._policy",
    "SFTTrainConfig": "theraloop.train._policy",
    "SoupConfig": "theraloop.train._pipeline",
    "train_dpo": "theraloop.train._policy",
    "train_joint": "theraloop.train._policy",
    "train_modpo": "theraloop.train._policy",
    "train_reward_model": "theraloop.train._reward",
    "train_sft": "theraloop.train._policy",
    "TrainResult": "theraloop.train._policy",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
