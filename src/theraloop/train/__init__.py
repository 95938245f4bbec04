"""Alignment training: preference losses as pure functions, LoRA soups, SFT/DPO/MODPO/joint trainers.

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
from theraloop.train._soup import lora_soup

__all__ = [
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
