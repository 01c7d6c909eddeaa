"""The analysis of Dabney et al. 2020 (Nature 577) on simulated dopamine populations: reversal
points and asymmetries measured from noisy responses, their signatures, and distribution decoding.

Modules, in the order the study uses them:
    task         the mouse tasks' constants (from envs/mouse.py) and W1 to the reward law
    simulation   populations trained on both tasks; their noisy responses recorded
    measurement  hinge fits (reversal points, asymmetries), correlations within animals
    solver       samples imputed from expectiles (float64 NumPy)
    decoding     the reward distribution decoded per animal and pooled, bounds from data or truth
    analysis     each variant's summary: signatures, split-half reliability, noise sweep, cues
    experiment   run_dopamine_analysis: every variant, the payload, the outputs
    report       dopamine.md and the outputs written; figures: the PNGs
"""

from benchmarks.dopamine.decoding import (
    DECODINGS,
    Decoded,
    data_bounds,
    decode,
)
from benchmarks.dopamine.experiment import NOISE_LEVELS, run_dopamine_analysis, stderr_progress
from benchmarks.dopamine.figures import (
    plot_asymmetry_vs_reversal,
    plot_decoding,
    plot_responses,
)
from benchmarks.dopamine.measurement import (
    correlation,
    hinge_reversal_points,
    hinge_slopes,
    measured_asymmetries,
    true_reversal_points,
)
from benchmarks.dopamine.report import markdown, write_outputs
from benchmarks.dopamine.solver import expectile_residuals, impute_from_expectiles
from benchmarks.dopamine.task import (
    CUE_PROBABILITIES,
    MAGNITUDE_PROBS,
    MAGNITUDES,
    PROBABILITY_TASK_REWARD,
    TRUE_REWARD_RANGE,
    reference_distances,
    w1_to_task,
)

__all__ = [
    "CUE_PROBABILITIES",
    "DECODINGS",
    "MAGNITUDES",
    "MAGNITUDE_PROBS",
    "NOISE_LEVELS",
    "PROBABILITY_TASK_REWARD",
    "TRUE_REWARD_RANGE",
    "Decoded",
    "correlation",
    "data_bounds",
    "decode",
    "expectile_residuals",
    "hinge_reversal_points",
    "hinge_slopes",
    "impute_from_expectiles",
    "markdown",
    "measured_asymmetries",
    "plot_asymmetry_vs_reversal",
    "plot_decoding",
    "plot_responses",
    "reference_distances",
    "run_dopamine_analysis",
    "stderr_progress",
    "true_reversal_points",
    "w1_to_task",
    "write_outputs",
]
