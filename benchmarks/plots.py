"""PNG plots of a suite's (or a train run's) results.json, drawn with matplotlib's Agg backend
so that the same results.json gives the same bytes.

Performance, in the style of rliable (Agarwal et al. 2021): learning curves, the IQM with its
95% stratified-bootstrap CI, performance profiles and the probability of improvement of each
pair of agents. Calibration: reliability diagrams and PIT histograms from the stored PIT
values, each cell's predicted CDF against the exact truth or the Monte Carlo returns, and on
the exact envs the predicted start-state distribution against the true one.
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np

from benchmarks import stats

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000
PROFILE_POINTS = 101
RELIABILITY_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
PIT_BINS = 10
MAX_COLUMNS = 5
NORMALISED = "score = (return - env min) / (env max - env min),\nmin and max over all agents' seeds"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; no Software tag, so the bytes do not name the matplotlib."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _finish(fig) -> bytes:
    data = png_bytes(fig)
    figure().close(fig)
    return data


def _panel_grid(count: int, panel_size: tuple[float, float], *, sharey=False):
    """A figure with `count` panels, at most MAX_COLUMNS a row; returns (fig, [axes])."""
    columns = min(count, MAX_COLUMNS)
    rows = -(-count // columns)
    width, height = panel_size
    fig, axes = figure().subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, sharey=sharey
    )
    axes = list(axes.reshape(-1))
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _say(ax, text: str) -> None:
    """A panel with nothing to draw says why instead of staying blank."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


# -- What the cell records hold -------------------------------------------------------------


def agent_colors(cells: list[dict]) -> dict[str, str]:
    """One colour per agent, in the order the agents first appear, the same in every plot."""
    agents = dict.fromkeys(cell["spec"]["agent"] for cell in cells)
    return {agent: f"C{index % 10}" for index, agent in enumerate(agents)}


def cells_by_env(cells: list[dict]) -> dict[str, list[dict]]:
    by_env: dict[str, list[dict]] = {}
    for cell in cells:
        by_env.setdefault(cell["spec"]["env"], []).append(cell)
    return by_env


def finite_returns(cell: dict) -> dict[int, float]:
    """Seed id -> final greedy return, of the seeds that did not diverge (null in the JSON)."""
    pairs = zip(cell["seed_ids"], cell["per_seed"]["return"])
    return {seed: float(value) for seed, value in pairs if value is not None and np.isfinite(value)}


def _env_title(title: str, env_cells: list[dict], returns_of=finite_returns) -> str:
    """A panel's title, noting where every agent's returns (`returns_of` a cell) are the same
    seed for seed, as on an env with one action, where the agent cannot change them: their
    lines and bars then lie on top of each other."""
    returns = [returns_of(cell) for cell in env_cells]
    same = len(returns) > 1 and returns[0] and all(other == returns[0] for other in returns[1:])
    return f"{title}\n(every agent's returns are the same)" if same else title


def return_range(env_cells: list[dict]) -> tuple[float, float] | None:
    """The lowest and highest final return of any agent's seed on one env; None if none."""
    values = [value for cell in env_cells for value in finite_returns(cell).values()]
    return (min(values), max(values)) if values else None


def normalise(values, low: float, high: float) -> np.ndarray:
    """(values - low) / (high - low); 1 everywhere where every seed has the same return."""
    values = np.asarray(values, dtype=float)
    return (values - low) / (high - low) if high > low else np.ones_like(values)


def normalised_scores(cells: list[dict], agent: str) -> np.ndarray | None:
    """[seeds, envs] normalised returns of `agent` on the seeds finite on every env, or None
    where the agent misses an env or no seed is finite everywhere."""
    columns = []
    for env_cells in cells_by_env(cells).values():
        own = [cell for cell in env_cells if cell["spec"]["agent"] == agent]
        span = return_range(env_cells)
        if not own or span is None:
            return None
        columns.append((finite_returns(own[0]), span))
    seeds = sorted(set.intersection(*(set(returns) for returns, _ in columns)))
    if not seeds:
        return None
    return np.stack(
        [normalise([returns[s] for s in seeds], *span) for returns, span in columns], axis=1
    )


def seed_pit_values(cell: dict) -> np.ndarray | None:
    """[seeds, episodes] PIT values: results.json pools them seed by seed over the seeds that
    did not diverge. Where they do not split evenly, one value a row (CIs then resample
    episodes, not seeds); None where there are none."""
    pit = np.asarray(cell["calibration"].get("pit_values") or [], dtype=float)
    seeds = len(finite_returns(cell))
    if pit.size == 0:
        return None
    return pit.reshape(seeds, -1) if seeds and pit.size % seeds == 0 else pit.reshape(-1, 1)


# -- Performance ----------------------------------------------------------------------------


def _curve_point(values: np.ndarray) -> dict:
    """IQM and CI over the seeds whose value is finite (diverged seeds are left out)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    return stats.aggregate(finite, num_resamples=500)["iqm"]


def plot_learning_curves(cells: list[dict], colors=None) -> dict[str, bytes]:
    """One PNG per env: IQM greedy return vs env steps per agent, with 95% bootstrap bands."""
    colors = colors or agent_colors(cells)
    out = {}
    for env, env_cells in cells_by_env(cells).items():
        fig, ax = figure().subplots(figsize=(6, 4))
        for cell in env_cells:
            steps = np.asarray(cell["curve"]["env_steps"])
            curve = np.asarray(cell["curve"]["eval_return"], dtype=float)  # [S, T]
            points = [_curve_point(curve[:, t]) for t in range(len(steps))]
            color = colors[cell["spec"]["agent"]]
            ax.plot(steps, [p["value"] for p in points], label=cell["spec"]["agent"], color=color)
            low, high = [p["ci_low"] for p in points], [p["ci_high"] for p in points]
            ax.fill_between(steps, low, high, alpha=0.2, color=color)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("IQM greedy return")
        title = f"{env} ({len(env_cells[0]['seed_ids'])} seeds, 95% CI)"
        ax.set_title(_env_title(title, env_cells, lambda cell: cell["curve"]["eval_return"]))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        out[f"curves_{safe_name(env)}.png"] = _finish(fig)
    return out


def _draw_intervals(ax, rows: dict[str, dict | None], colors: dict[str, str]) -> None:
    """rliable's interval plot: per row a bar over the CI and a tick at the point estimate.

    rows: label -> {"value", "ci_low", "ci_high"}, or None (drawn as "diverged").
    colors: label -> colour.
    """
    labels = list(rows)
    # Bars pin the axis to their ends; without that, an interval at the extreme of the data
    # (a CI collapsed onto the maximum return) gets a margin instead of hiding in the frame.
    ax.use_sticky_edges = False
    for y, label in enumerate(labels):
        interval = rows[label]
        if interval is None:
            ax.text(0.02, y, "diverged", va="center", transform=ax.get_yaxis_transform())
            continue
        low, high = interval["ci_low"], interval["ci_high"]
        ax.barh(y, high - low, left=low, height=0.6, color=colors[label], alpha=0.6)
        ax.plot([interval["value"]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _all_envs(by_env: dict) -> str:
    return f"all {len(by_env)} envs together"


def _normalised_iqm(cells: list[dict], agent: str) -> dict | None:
    scores = normalised_scores(cells, agent)
    return None if scores is None else stats.aggregate(scores, num_resamples=NUM_RESAMPLES)["iqm"]


def plot_aggregate_iqm(cells: list[dict], colors=None) -> bytes:
    """IQM of the final return per agent with its 95% stratified-bootstrap CI: one panel per
    env, and before them one of the min-max normalised scores over all envs where there are
    several (the bootstrap resamples seeds within each env)."""
    colors = colors or agent_colors(cells)
    by_env = cells_by_env(cells)
    panels = []  # (title, x label, {agent: interval or None})
    if len(by_env) > 1:
        rows = {agent: _normalised_iqm(cells, agent) for agent in colors}
        panels.append((_all_envs(by_env), f"IQM of normalised {NORMALISED}", rows))
    for env, env_cells in by_env.items():
        rows = {cell["spec"]["agent"]: cell["aggregates"]["return"] for cell in env_cells}
        rows = {agent: None if value is None else value["iqm"] for agent, value in rows.items()}
        title = _env_title(f"{env} ({len(env_cells[0]['seed_ids'])} seeds)", env_cells)
        panels.append((title, "IQM of the final greedy return", rows))
    fig, axes = _panel_grid(len(panels), (4.2, 0.45 * len(colors) + 1.4))
    for ax, (title, xlabel, rows) in zip(axes, panels):
        _draw_intervals(ax, rows, colors)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
    fig.suptitle("IQM with 95% stratified-bootstrap CI", y=1.02)
    fig.tight_layout()
    return _finish(fig)


def stratified_mean_interval(values, *, num_resamples=NUM_RESAMPLES, seed=0) -> dict:
    """Per column, the mean over tasks of each task's mean over runs, with its 95% stratified-
    bootstrap CI: stats.aggregate's "mean" for many columns at once.

    A resample of a task's runs is its multiplicities c [runs], so all columns' replicates are
    one matrix product c @ values per task, where stats.aggregate would take a call per column.
    values: [runs, tasks, columns]. Returns {"value", "ci_low", "ci_high"}: [columns] each.
    """
    values = np.asarray(values, dtype=float)
    runs, tasks, _ = values.shape
    rng = np.random.default_rng(seed)
    replicates = 0.0
    for task in range(tasks):
        counts = rng.multinomial(runs, np.full(runs, 1.0 / runs), size=num_resamples)
        replicates = replicates + counts @ values[:, task, :] / (runs * tasks)
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return {"value": values.mean(axis=(0, 1)), "ci_low": low, "ci_high": high}


def performance_profile(scores, thresholds) -> dict[str, np.ndarray]:
    """Fraction of runs (seeds x envs, each env weighted equally) scoring above each threshold,
    with its 95% stratified-bootstrap CI: {"value", "ci_low", "ci_high"} arrays like thresholds.

    scores: [seeds] or [seeds, envs].
    """
    scores = np.asarray(scores, dtype=float)
    scores = scores[:, None] if scores.ndim == 1 else scores
    above = scores[:, :, None] > np.asarray(thresholds)[None, None, :]
    return stratified_mean_interval(above)


def _profile_panels(cells: list[dict], agents) -> list[tuple]:
    """(title, x label, thresholds, {agent: scores}) for all envs (normalised) and each env."""
    by_env = cells_by_env(cells)
    panels = []
    if len(by_env) > 1:
        scores = {agent: normalised_scores(cells, agent) for agent in agents}
        scores = {agent: value for agent, value in scores.items() if value is not None}
        thresholds = np.linspace(0.0, 1.0, PROFILE_POINTS)
        panels.append((_all_envs(by_env), f"normalised {NORMALISED}", thresholds, scores))
    for env, env_cells in by_env.items():
        span = return_range(env_cells) or (0.0, 1.0)
        scores = {
            cell["spec"]["agent"]: np.asarray(list(finite_returns(cell).values()))
            for cell in env_cells
            if finite_returns(cell)
        }
        thresholds = np.linspace(*span, PROFILE_POINTS)
        panels.append((_env_title(env, env_cells), "final greedy return", thresholds, scores))
    return panels


def plot_performance_profiles(cells: list[dict], colors=None) -> bytes:
    """Performance profiles with 95% CI bands: the fraction of runs above each threshold."""
    colors = colors or agent_colors(cells)
    panels = _profile_panels(cells, colors)
    fig, axes = _panel_grid(len(panels), (4.6, 3.6), sharey=True)
    for ax, (title, xlabel, thresholds, scores) in zip(axes, panels):
        for agent, agent_scores in scores.items():
            profile = performance_profile(agent_scores, thresholds)
            ax.plot(thresholds, profile["value"], color=colors[agent], label=agent)
            band = (profile["ci_low"], profile["ci_high"])
            ax.fill_between(thresholds, *band, color=colors[agent], alpha=0.15)
        if not scores:
            _say(ax, "every seed diverged")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"threshold tau on the {xlabel}", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of runs with score > tau")
    _figure_legend(fig, colors)
    fig.suptitle("Performance profiles (95% stratified-bootstrap CI)", y=1.02)
    fig.tight_layout()
    return _finish(fig)


def _figure_legend(fig, colors: dict[str, str]) -> None:
    """One legend of the agents' colours for the whole figure, to the right of its panels."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=color, linewidth=3, label=agent) for agent, color in colors.items()
    ]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5))


def improvement_replicates(x, y, rng, num_resamples: int = NUM_RESAMPLES) -> np.ndarray:
    """[num_resamples] bootstrap replicates of P(X > Y) + 1/2 P(X = Y), runs of x [n] and
    y [m] resampled independently.

    A resample is its multiplicities c_x [n], c_y [m], so its probability is
    c_x . W . c_y / (n m) with W the [n, m] matrix of pairwise wins: one matrix product per
    replicate instead of a Mann-Whitney U of the resampled runs (the same number).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    wins = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    counts_x = rng.multinomial(x.size, np.full(x.size, 1.0 / x.size), size=num_resamples)
    counts_y = rng.multinomial(y.size, np.full(y.size, 1.0 / y.size), size=num_resamples)
    return np.sum((counts_x @ wins) * counts_y, axis=1) / (x.size * y.size)


def improvement_interval(x_by_env: list, y_by_env: list, *, seed: int = 0) -> dict:
    """P(X > Y) averaged over envs (rliable) with its 95% CI from resampling each env's runs
    of both agents independently. x_by_env, y_by_env: per env the runs' returns."""
    rng = np.random.default_rng(seed)
    point = np.mean([stats.probability_of_improvement(x, y) for x, y in zip(x_by_env, y_by_env)])
    replicates = np.mean(
        [improvement_replicates(x, y, rng) for x, y in zip(x_by_env, y_by_env)], axis=0
    )
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return {"value": float(point), "ci_low": float(low), "ci_high": float(high)}


def _improvement_rows(env_groups: list[list[dict]], agents: list[str]) -> dict[str, dict | None]:
    """'X vs Y' -> P(X > Y) over the envs of env_groups (each a list of an env's cells), for
    each pair of agents in order; None where a side has no finite seed on some env."""
    returns = [
        {cell["spec"]["agent"]: np.asarray(list(finite_returns(cell).values())) for cell in cells}
        for cells in env_groups
    ]
    rows = {}
    for first, second in itertools.combinations(agents, 2):
        x = [by_agent.get(first, np.empty(0)) for by_agent in returns]
        y = [by_agent.get(second, np.empty(0)) for by_agent in returns]
        usable = all(a.size and b.size for a, b in zip(x, y))
        rows[f"{first} vs {second}"] = improvement_interval(x, y) if usable else None
    return rows


def plot_probability_of_improvement(cells: list[dict], colors=None) -> bytes:
    """P(X > Y) for each pair of agents with its 95% CI: over all envs (the mean of the envs'
    probabilities) where there are several, then per env. 0.5: neither is better."""
    colors = colors or agent_colors(cells)
    agents = list(colors)
    by_env = cells_by_env(cells)
    panels = []
    if len(by_env) > 1:
        panels.append((_all_envs(by_env), _improvement_rows(list(by_env.values()), agents)))
    for env, env_cells in by_env.items():
        panels.append((_env_title(env, env_cells), _improvement_rows([env_cells], agents)))
    pairs = list(panels[0][1])
    row_colors = {pair: colors[pair.split(" vs ")[0]] for pair in pairs}
    fig, axes = _panel_grid(len(panels), (4.0, 0.4 * len(pairs) + 1.4))
    for ax, (title, rows) in zip(axes, panels):
        _draw_intervals(ax, rows, row_colors)
        ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_xlim(-0.03, 1.03)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("P(X > Y) of the final greedy return", fontsize=8)
    fig.suptitle("Probability of improvement, X vs Y (95% bootstrap CI)", y=1.02)
    fig.tight_layout()
    return _finish(fig)


# -- Calibration ----------------------------------------------------------------------------


def _step_cdf(locs, probs):
    order = np.argsort(locs, kind="stable")
    return np.asarray(locs, dtype=float)[order], np.cumsum(np.asarray(probs, dtype=float)[order])


def plot_calibration(cell: dict) -> bytes:
    """Predicted CDF (first seed) against the exact truth or the Monte Carlo returns; PIT."""
    calib = cell["calibration"]
    fig, (ax_cdf, ax_pit) = figure().subplots(1, 2, figsize=(10, 3.8))
    if len(calib["example_prediction"]["locs"]):
        x, f = _step_cdf(calib["example_prediction"]["locs"], calib["example_prediction"]["probs"])
        ax_cdf.step(x, f, where="post", label=f"{cell['spec']['agent']} prediction")
    else:
        ax_cdf.set_title("every seed diverged")
    if calib.get("truth"):
        tx, tf = _step_cdf(calib["truth"]["locs"], calib["truth"]["probs"])
        ax_cdf.step(tx, tf, where="post", label="exact truth", color="black")
    returns = np.sort(np.asarray(calib["example_returns"], dtype=float))
    ax_cdf.step(
        returns,
        np.arange(1, len(returns) + 1) / max(len(returns), 1),
        where="post",
        label="MC returns",
        color="gray",
        linestyle="--",
    )
    ax_cdf.set_xlabel("discounted return")
    ax_cdf.set_ylabel("CDF")
    ax_cdf.legend(fontsize=8)
    hist = np.asarray(calib["pit_histogram"] or [], dtype=float)
    bins = max(len(hist), 1)
    if len(hist):
        ax_pit.bar((np.arange(bins) + 0.5) / bins, hist * bins, width=1.0 / bins, edgecolor="k")
    ax_pit.axhline(1.0, color="red", linestyle="--", label="calibrated")
    ax_pit.set_xlabel("PIT value")
    ax_pit.set_ylabel("density")
    ax_pit.legend(fontsize=8)
    fig.suptitle(f"{cell['spec']['agent']} on {cell['spec']['env']}")
    return _finish(fig)


def reliability(pit_by_seed: np.ndarray, levels=RELIABILITY_LEVELS) -> dict[str, np.ndarray]:
    """Observed frequency of returns below each predicted quantile level: the fraction of PIT
    values <= level (the randomised PIT makes this exact for discrete predictions too), the
    mean over seeds, with its 95% bootstrap CI over seeds.

    pit_by_seed: [seeds, episodes]. Returns {"value", "ci_low", "ci_high"}, arrays like levels.
    """
    below = np.mean(pit_by_seed[:, :, None] <= np.asarray(levels), axis=1)  # [seeds, levels]
    return stratified_mean_interval(below[:, None, :])


def _pit_ks(cell: dict) -> str:
    value = cell["calibration"].get("pit_ks_pooled")
    return "" if value is None else f", PIT KS {value:.2f}"


def plot_reliability(env_cells: list[dict], colors=None) -> bytes:
    """Per agent on one env: predicted quantile level against the observed frequency of the
    start state's discounted returns below it, 95% CI over seeds; on the diagonal when
    calibrated, above it where the predicted quantiles are too high."""
    colors = colors or agent_colors(env_cells)
    fig, axes = _panel_grid(len(env_cells), (3.4, 3.4), sharey=True)
    for ax, cell in zip(axes, env_cells):
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        pit = seed_pit_values(cell)
        if pit is None:
            _say(ax, "every seed diverged")
        else:
            curve = reliability(pit)
            color = colors[cell["spec"]["agent"]]
            ax.plot(RELIABILITY_LEVELS, curve["value"], marker="o", markersize=3, color=color)
            band = (curve["ci_low"], curve["ci_high"])
            ax.fill_between(RELIABILITY_LEVELS, *band, color=color, alpha=0.2)
        ax.set_title(f"{cell['spec']['agent']}{_pit_ks(cell)}", fontsize=10)
        # A margin, so that a curve along 0 or 1 is not hidden by the frame.
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted quantile level tau", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of returns below\nthe predicted tau-quantile", fontsize=8)
    fig.suptitle(
        f"{env_cells[0]['spec']['env']}: reliability of the start-state return distribution "
        "(95% CI over seeds)",
        y=1.02,
    )
    fig.tight_layout()
    return _finish(fig)


def plot_pit_histograms(env_cells: list[dict], colors=None) -> bytes:
    """Per agent on one env: the histogram of PIT values pooled over seeds and episodes, as a
    density (flat at 1 when calibrated), with the range a calibrated histogram of as many
    values stays in 95% of the time in each bin."""
    colors = colors or agent_colors(env_cells)
    fig, axes = _panel_grid(len(env_cells), (3.4, 2.8), sharey=True)
    centres = (np.arange(PIT_BINS) + 0.5) / PIT_BINS
    for ax, cell in zip(axes, env_cells):
        pit = seed_pit_values(cell)
        if pit is None:
            _say(ax, "every seed diverged")
        else:
            counts, _ = np.histogram(pit, bins=PIT_BINS, range=(0.0, 1.0))
            density = counts * PIT_BINS / pit.size
            ax.bar(centres, density, width=1.0 / PIT_BINS, color=colors[cell["spec"]["agent"]])
            # A bin of a calibrated histogram holds Binomial(n, 1/bins) values.
            spread = 1.96 * np.sqrt((PIT_BINS - 1) / pit.size)
            ax.axhspan(1 - spread, 1 + spread, color="gray", alpha=0.25, linewidth=0)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{cell['spec']['agent']}{_pit_ks(cell)}", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("PIT value", fontsize=8)
    axes[0].set_ylabel("density (1 = calibrated)", fontsize=8)
    fig.suptitle(
        f"{env_cells[0]['spec']['env']}: PIT histograms pooled over seeds and episodes "
        "(grey: 95% range if calibrated)",
        y=1.02,
    )
    fig.tight_layout()
    return _finish(fig)


def mass_near_atoms(atoms, locs, probs) -> np.ndarray:
    """The probability mass of (locs, probs) nearest each of the sorted `atoms` [k]."""
    atoms = np.asarray(atoms, dtype=float)
    edges = (atoms[1:] + atoms[:-1]) / 2.0
    nearest = np.searchsorted(edges, np.asarray(locs, dtype=float))
    return np.bincount(nearest, weights=np.asarray(probs, dtype=float), minlength=atoms.size)


def _draw_cdfs(ax, truth, prediction, color) -> None:
    """The two CDFs as steps; the area between them (the W1 distance) shaded."""
    support = np.union1d(truth[0], prediction[0])
    true_cdf = np.concatenate([[0.0], truth[1]])[np.searchsorted(truth[0], support, "right")]
    pred_cdf = np.concatenate([[0.0], prediction[1]])[
        np.searchsorted(prediction[0], support, "right")
    ]
    ax.fill_between(support, true_cdf, pred_cdf, step="post", color=color, alpha=0.2)
    ax.step(support, true_cdf, where="post", color="black", label="true")
    ax.step(support, pred_cdf, where="post", color=color, label="predicted")
    ax.set_xlabel("discounted return", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")


def _draw_atom_masses(ax, truth, prediction, color) -> None:
    """Bars per true atom: its probability, and the predicted mass nearest it.

    truth, prediction: (locs, probs) each.
    """
    atoms, true_mass = _merged_atoms(*truth)
    predicted = mass_near_atoms(atoms, *prediction)
    positions = np.arange(atoms.size)
    ax.bar(positions - 0.2, true_mass, width=0.4, color="black", label="true")
    ax.bar(positions + 0.2, predicted, width=0.4, color=color, label="predicted, nearest")
    rotation = 90 if atoms.size > 8 else 0
    ax.set_xticks(positions, [f"{a:.3g}" for a in atoms], fontsize=7, rotation=rotation)
    ax.set_xlabel("true atom (discounted return)", fontsize=8)
    # Headroom above the bars for the legend.
    ax.set_ylim(0.0, 1.3 * max(true_mass.max(), predicted.max()))
    ax.legend(fontsize=7, ncol=2, loc="upper center")


def _merged_atoms(locs, probs) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct atoms with positive mass and the mass at each."""
    locs, probs = np.asarray(locs, dtype=float), np.asarray(probs, dtype=float)
    atoms, index = np.unique(locs[probs > 0], return_inverse=True)
    return atoms, np.bincount(index, weights=probs[probs > 0], minlength=atoms.size)


def plot_exact_distributions(env_cells: list[dict], colors=None) -> bytes:
    """Per agent on an exact env: its predicted start-state return distribution (the first
    finite seed's mixture over its evaluation episodes, as stored) over the true one (the
    mixture of the laws of the actions those episodes took): CDFs, and mass per true atom."""
    colors = colors or agent_colors(env_cells)
    fig, axes = figure().subplots(
        2, len(env_cells), figsize=(3.6 * len(env_cells), 6.4), squeeze=False
    )
    for column, cell in enumerate(env_cells):
        calib, color = cell["calibration"], colors[cell["spec"]["agent"]]
        ax_cdf, ax_mass = axes[0, column], axes[1, column]
        ax_cdf.set_title(f"{cell['spec']['agent']}{_example_w1(cell)}", fontsize=10)
        if not len(calib["example_prediction"]["locs"]) or not calib.get("truth"):
            _say(ax_cdf, "every seed diverged")
            ax_mass.set_visible(False)
            continue
        truth = (calib["truth"]["locs"], calib["truth"]["probs"])
        prediction = (calib["example_prediction"]["locs"], calib["example_prediction"]["probs"])
        _draw_cdfs(ax_cdf, _step_cdf(*truth), _step_cdf(*prediction), color)
        _draw_atom_masses(ax_mass, truth, prediction, color)
    axes[0, 0].set_ylabel("CDF")
    axes[1, 0].set_ylabel("probability mass")
    fig.suptitle(
        f"{env_cells[0]['spec']['env']}: predicted start-state return distribution (first seed) "
        "over the exact one",
        y=1.01,
    )
    fig.tight_layout()
    return _finish(fig)


def _example_w1(cell: dict) -> str:
    """The W1 of the plotted prediction: that of the first seed that did not diverge."""
    seed_w1 = [value for value in cell["per_seed"]["wasserstein1"] if value is not None]
    return f", W1 {seed_w1[0]:.3f}" if seed_w1 else ""


# -- All of a payload's plots ---------------------------------------------------------------


def draw_all(cells: list[dict]) -> dict[str, bytes]:
    """Every plot of a suite's or a train run's cells: file name -> PNG bytes."""
    colors = agent_colors(cells)
    out = plot_learning_curves(cells, colors)
    for cell in cells:
        name = f"calibration_{safe_name(cell['spec']['agent'])}_{safe_name(cell['spec']['env'])}"
        out[f"{name}.png"] = plot_calibration(cell)
    out["aggregate_iqm.png"] = plot_aggregate_iqm(cells, colors)
    out["performance_profiles.png"] = plot_performance_profiles(cells, colors)
    if len(colors) > 1:
        out["probability_of_improvement.png"] = plot_probability_of_improvement(cells, colors)
    for env, env_cells in cells_by_env(cells).items():
        out[f"reliability_{safe_name(env)}.png"] = plot_reliability(env_cells, colors)
        out[f"pit_{safe_name(env)}.png"] = plot_pit_histograms(env_cells, colors)
        exact = [cell for cell in env_cells if cell["calibration"].get("reference") == "exact"]
        if exact:
            out[f"distribution_{safe_name(env)}.png"] = plot_exact_distributions(exact, colors)
    return out
