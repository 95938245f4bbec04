"""Alignment training: preference losses as pure functions, per-criterion reward models, LoRA soups,
SFT/DPO/MODPO/joint trainers.

The losses need only torch; the soup and the trainers also need transformers and peft
(`pip install theraloop[train]`).
"""

from theraloop.train._losses import dpo_loss, dpo_margin, joint_dpo_loss, modpo_loss, sequence_logps
from theraloop.train._policy import (
    DPOTrainConfig,
    JointPair,
    JointTrainConfig,
    MODPOPair,
    MODPOTrainConfig,
    PolicyTrainConfig,
    PreferencePair,
    SFTExample,
    SFTTrainConfig,
    TrainResult,
    peak_rss_mb,
    train_dpo,
    train_joint,
    train_modpo,
    train_sft,
)
from theraloop.train._reward import (
    PairMargins,
    RewardConfig,
    RewardModel,
    RewardTrainingResult,
    bradley_terry_loss,
    compute_margins,
    pair_key,
    pairwise_accuracy,
    read_pairs,
    reward_input,
    train_reward_model,
)
from theraloop.train._soup import lora_soup

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
    "DPOTrainConfig",
    "JointPair",
    "JointTrainConfig",
    "MODPOPair",
    "MODPOTrainConfig",
    "PolicyTrainConfig",
    "PreferencePair",
    "SFTExample",
    "SFTTrainConfig",
    "TrainResult",
    "dpo_loss",
    "dpo_margin",
    "joint_dpo_loss",
    "lora_soup",
    "modpo_loss",
    "peak_rss_mb",
    "sequence_logps",
    "train_dpo",
    "train_joint",
    "train_modpo",
    "train_sft",
]
