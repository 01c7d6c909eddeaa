"""The study's PNG figures, each drawn from the JSON payload alone."""

from __future__ import annotations

import numpy as np
import scipy.stats

from benchmarks import report
from benchmarks.dopamine.task import MAGNITUDE_PROBS, MAGNITUDES, reward_mean_and_sd

# Line style and label of each decoding in the decoding figure.
_DECODING_STYLES = {
    "data_bounds": ("-", "bounds from data"),
    "true_bounds": ("--", "truth-bounded"),
}


def plot_decoding(payload: dict) -> bytes:
    """Decoded density and CDF of each variant (cells pooled over animals) against the truth:
    bounds from the data solid, truth-bounded dashed."""
    plt = report.figure()
    fig, (density_axis, cdf_axis) = plt.subplots(1, 2, figsize=(11, 4))
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    grid = np.linspace(-6.0, 24.0, 700)
    gaussian = scipy.stats.norm(*reward_mean_and_sd())
    density_axis.stem(magnitudes, probs, linefmt="k-", markerfmt="ko", basefmt=" ", label="truth")
    density_axis.plot(grid, gaussian.pdf(grid), "C7:", label="Gaussian, true mean and SD")
    cdf_axis.step(np.r_[grid[0], magnitudes], np.r_[0.0, np.cumsum(probs)], "k", where="post")
    gaussian_w1 = payload["reference_w1"]["gaussian"]
    cdf_axis.plot(grid, gaussian.cdf(grid), "C7:", label=f"Gaussian (W1 {gaussian_w1:.2f})")
    for color, (variant, summary) in zip(("C0", "C1", "C3"), payload["variants"].items()):
        for name, (line, label) in _DECODING_STYLES.items():
            if variant == "quantile" and name == "true_bounds":
                continue  # quantile atoms use no bounds: the same as the solid line
            style = {"color": color, "label": f"{variant}, {label}"}
            _plot_decoded(density_axis, cdf_axis, grid, summary["decodings"][name], line, style)
    # Narrow decodings (the classical cells' point-like one) would dwarf everything else.
    density_axis.set_ylim(0.0, 1.6 * probs.max())
    density_axis.set(
        xlabel="reward (ul)",
        ylabel="density / probability",
        title="decoded, cells pooled (tall peaks cut off)",
    )
    cdf_axis.set(xlabel="reward (ul)", ylabel="CDF", title="decoded CDF (truth in black)")
    density_axis.legend(fontsize=6)
    cdf_axis.legend(fontsize=6)
    return report.png_bytes(fig)


def _plot_decoded(density_axis, cdf_axis, grid, decoding: dict, line: str, style: dict) -> None:
    """One pooled decoding: its kernel density (where it has a spread) and its CDF with its W1."""
    locs = np.asarray(decoding["pooled"]["locs"])
    weights = np.asarray(decoding["pooled"]["probs"])
    if locs.size > 1 and np.ptp(locs) > 0:
        kde = scipy.stats.gaussian_kde(locs, bw_method=0.15, weights=weights)
        density_axis.plot(grid, kde(grid), line, **style)
    cdf_axis.step(
        locs,
        np.cumsum(weights),
        line,
        color=style["color"],
        where="post",
        label=f"{style['label']} (W1 {decoding['pooled_w1']:.2f})",
    )


def plot_asymmetry_vs_reversal(payload: dict) -> bytes:
    """Measured asymmetry (half B) against reversal point (half A), one panel per variant."""
    plt = report.figure()
    variants = payload["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 3.6))
    for axis, (variant, summary) in zip(axes, variants.items()):
        cells = payload["cells"][variant]
        asymmetry = np.asarray(cells["asymmetry_half_b"], np.float64)
        reversal = np.asarray(cells["reversal_half_a"], np.float64)
        axis.scatter(asymmetry.ravel(), reversal.ravel(), s=8, alpha=0.6)
        stat = summary["asymmetry_vs_reversal"]
        title = (
            variant if stat["r"] is None else f"{variant}: r={stat['r']:+.2f}, p={stat['p']:.1e}"
        )
        axis.set(xlabel="asymmetry (half B)", ylabel="reversal point, ul (half A)", title=title)
    return report.png_bytes(fig)


def plot_responses(payload: dict) -> bytes:
    """Animal 0's mean response to each magnitude, one line per cell coloured by asymmetry."""
    plt = report.figure()
    cells = payload["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.6))
    fig.suptitle("mean responses of animal 0's cells (blue: pessimistic, red: optimistic)")
    for axis, (variant, variant_cells) in zip(axes, cells.items()):
        mean_responses = np.asarray(variant_cells["mean_responses"], np.float64)[0]
        asymmetry = np.nan_to_num(np.asarray(variant_cells["asymmetry"], np.float64)[0], nan=0.5)
        colors = plt.cm.coolwarm(np.clip(asymmetry, 0.0, 1.0))
        for cell_responses, color in zip(mean_responses, colors):
            axis.plot(MAGNITUDES, cell_responses, "-", color=color, lw=0.8)
        axis.axhline(0.0, color="k", lw=0.5)
        axis.set(
            xscale="log",
            xlabel="reward (ul)",
            ylabel="mean response",
            title=variant,
        )
    return report.png_bytes(fig)
