"""Statistics: paired comparisons (McNemar, bootstrap, Holm), human-study agreement and
judge-versus-human score agreement (ICC, weighted kappa, Krippendorff alpha, Bland-Altman)."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "AgreementReport": "theraloop.stats._agreement",
    "BlandAltman": "theraloop.stats._agreement",
    "DimensionAgreement": "theraloop.stats._agreement",
    "ICCEstimate": "theraloop.stats._agreement",
    "ICCKind": "theraloop.stats._agreement",
    "ICC_KINDS": "theraloop.stats._agreement",
    "McNemarResult": "theraloop.stats._paired",
    "ResponseAgreement": "theraloop.stats._agreement",
    "SystemAgreement": "theraloop.stats._agreement",
    "SystemMeans": "theraloop.stats._agreement",
    "WinRates": "theraloop.stats._paired",
    "accuracy_by_consensus": "theraloop.stats._human",
    "agreement_report": "theraloop.stats._agreement",
    "bland_altman": "theraloop.stats._agreement",
    "bland_altman_points": "theraloop.stats._agreement",
    "bootstrap_ci": "theraloop.stats._paired",
    "cohen_kappa": "theraloop.stats._human",
    "cohen_kappa_non_tie": "theraloop.stats._human",
    "confusion_matrix": "theraloop.stats._human",
    "consensus_strength": "theraloop.stats._human",
    "exact_agreement": "theraloop.stats._human",
    "fleiss_kappa": "theraloop.stats._human",
    "gwet_ac1": "theraloop.stats._human",
    "gwet_ac1_non_tie": "theraloop.stats._human",
    "holm": "theraloop.stats._paired",
    "holm_rejections": "theraloop.stats._paired",
    "human_study_report": "theraloop.stats._human",
    "icc": "theraloop.stats._agreement",
    "icc_ci": "theraloop.stats._agreement",
    "krippendorff_alpha": "theraloop.stats._agreement",
    "leave_one_rater_out": "theraloop.stats._human",
    "mae": "theraloop.stats._agreement",
    "majority_label": "theraloop.stats._human",
    "mcnemar": "theraloop.stats._paired",
    "mcnemar_from_outcomes": "theraloop.stats._paired",
    "mean_bias": "theraloop.stats._agreement",
    "pairwise_agreement": "theraloop.stats._human",
    "pearson": "theraloop.stats._agreement",
    "quadratic_weighted_kappa": "theraloop.stats._agreement",
    "reliability_tier": "theraloop.stats._agreement",
    "spearman": "theraloop.stats._agreement",
    "win_rate_ci": "theraloop.stats._paired",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
