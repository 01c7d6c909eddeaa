"""Suites: TOML files in benchmarks/suites/ naming agents x envs x overrides, seeds and steps;
`run_suite` runs every cell resumably (a finished cell is kept) with atomic writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import agents
import envs
from agents.base import ConfigError
from benchmarks import cell as cells
from benchmarks import distributed
from benchmarks import results as results_io
from benchmarks.cell import CellSpec
from benchmarks.train import TrainConfig

SUITES_DIR = Path(__file__).resolve().parent / "suites"
KINDS = ("train", "dopamine", "sweep")
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
_TOP_KEYS = {
    "name",
    "description",
    "kind",
    "seeds",
    "agents",
    "envs",
    "agent",
    "train",
    "options",
    "sweep",
}
# A sweep suite's [sweep] table: its search space and selection (see benchmarks/sweep.py).
_SWEEP_KEYS = {"grid", "random", "samples", "search_seed", "eval_seeds", "select", "max_memory"}
_ENV_KEYS = {"params", "agent", "train", "seeds"}


class SuiteError(ValueError):
    """An unknown suite or a malformed suite file; the message says which key and line."""


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    kind: str
    seeds: int
    cells: tuple[CellSpec, ...]
    cell_seeds: tuple[int, ...]  # seeds per cell (an env may ask for its own count)
    options: dict
    source: str
    sweep: dict = dataclasses.field(default_factory=dict)  # kind "sweep": its [sweep] table


def names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def _line_of(text: str, key: str, section: str | None = None) -> str:
    """'line N' of the first occurrence of `key` in the TOML text (after the first mention of
    `section`, where given), for error messages."""
    lines = text.splitlines()
    start = 0
    if section is not None:
        start = next((i for i, line in enumerate(lines) if section in line), 0)
    for number, line in enumerate(lines[start:], start + 1):
        if re.search(rf'(^|[\s."\[]){re.escape(key)}(["\]\s=.]|$)', line):
            return f"line {number}"
    return "unknown line"


class _SuiteFile(NamedTuple):
    """A suite file as read: its path and text (for errors that name a line) and its TOML."""

    path: Path
    text: str
    data: dict

    def fail(self, key: str, message: str, section: str | None = None) -> NoReturn:
        raise SuiteError(f"{self.path.name} ({_line_of(self.text, key, section)}): {message}")


class _SuiteWide(NamedTuple):
    """What every env table of a train suite starts from, and the command line's overrides,
    which beat every table."""

    agents: list[str]
    agent: dict  # the [agent] table: overrides for all agents, and [agent.NAME] sub-tables
    train: dict  # the [train] table, --steps applied
    seeds: int  # the suite's seeds per cell
    cli_seeds: int | None
    cli_steps: int | None


def load(name_or_path: str, *, seeds: int | None = None, steps: int | None = None) -> Suite:
    """Parse and validate a suite by name (benchmarks/suites/NAME.toml) or by path."""
    suite_file = _read(_suite_path(name_or_path))
    kind, suite_seeds = _check_top_level(suite_file, seeds)
    cells, cell_seeds, options = [], [], {}
    if kind in ("train", "sweep"):
        if "options" in suite_file.data:
            suite_file.fail("options", f'[options] is for kind = "dopamine"; this suite is {kind}')
        cells, cell_seeds = _train_cells(
            suite_file, _suite_wide(suite_file, suite_seeds, seeds, steps)
        )
    else:
        options = _dopamine_options(suite_file, seeds, steps)
    sweep = _sweep_table(suite_file, cells) if kind == "sweep" else {}
    return Suite(
        _suite_name(suite_file),
        suite_file.data.get("description", ""),
        kind,
        suite_seeds,
        tuple(cells),
        tuple(cell_seeds),
        options,
        suite_file.text,
        sweep,
    )


# Keys of a train or sweep suite that a dopamine study has no use for.
_TRAIN_ONLY_KEYS = ("seeds", "agents", "envs", "agent", "train", "sweep")


def _dopamine_options(suite_file: _SuiteFile, seeds: int | None, steps: int | None) -> dict:
    """A dopamine suite's [options], validated (StudyOptions), as keywords for the study.

    The study has animals, not seeds, and trials, not steps: --seeds, --steps and the train
    suites' keys are refused rather than ignored."""
    from benchmarks.dopamine.experiment import study_options

    for flag, value in (("--seeds", seeds), ("--steps", steps)):
        if value is not None:
            raise ConfigError(
                f"{flag}={value}: a dopamine suite has no {flag[2:]}; set num_animals or "
                f"num_trials in its [options] table"
            )
    for key in _TRAIN_ONLY_KEYS:
        if key in suite_file.data:
            suite_file.fail(
                key,
                f"{key!r} is not a dopamine suite key (valid: name, description, kind, options; "
                "the animals are [options] num_animals)",
            )
    options = suite_file.data.get("options", {})
    if not isinstance(options, dict):
        suite_file.fail("options", "options must be a table of dopamine study settings")
    try:
        return dataclasses.asdict(study_options(options))
    except ConfigError as err:
        named = [key for key in options if re.search(rf"\b{re.escape(key)}\b", str(err))]
        suite_file.fail(named[0] if named else "options", str(err), section="[options]")


def _suite_name(suite_file: _SuiteFile) -> str:
    """The suite's `name` (what results record and `compare` matches), else its file's stem."""
    name = suite_file.data.get("name", suite_file.path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        suite_file.fail("name", f"name={name!r} must be letters, digits, '_', '.' or '-'")
    return name


def _sweep_table(suite_file: _SuiteFile, cells: list[CellSpec]) -> dict:
    """A sweep suite's [sweep] table, checked by building every cell's sweep (so a bad field,
    value or metric is reported with its line before anything runs)."""
    from benchmarks import sweep as sweeps

    table = suite_file.data.get("sweep")
    if not isinstance(table, dict):
        suite_file.fail("kind", 'kind = "sweep" needs a [sweep] table with grid or random')
    unknown = sorted(set(table) - _SWEEP_KEYS)
    if unknown:
        suite_file.fail(
            unknown[0],
            f"unknown [sweep] key {unknown[0]!r}; valid: {', '.join(sorted(_SWEEP_KEYS))}",
        )
    for key in ("grid", "random"):
        if not isinstance(table.get(key, {}), dict):
            suite_file.fail(key, f"[sweep] {key} must be a table of field = values")
    for key, low in (("samples", 1), ("search_seed", 0), ("eval_seeds", 0)):
        value = table.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            suite_file.fail(key, f"[sweep] {key}={value!r} must be an integer >= {low}")
    grid = {k: v if isinstance(v, list) else [v] for k, v in table.get("grid", {}).items()}
    try:
        space = sweeps.SearchSpace(
            grid=grid,
            random=dict(table.get("random", {})),
            samples=table.get("samples", 1),
            search_seed=table.get("search_seed", 0),
        )
        if "max_memory" in table:
            sweeps.parse_bytes(table["max_memory"])
        for cell in cells:
            sweep_spec(cell, table, space, seeds=1)
    except ConfigError as err:
        suite_file.fail("sweep", str(err))
    return {**table, "space": space}


def sweep_spec(cell: CellSpec, table: dict, space, seeds: int):
    """The sweep of one suite cell: its agent config as the base every configuration shares."""
    from benchmarks import sweep as sweeps

    base = {
        f.name: getattr(cell.agent_config, f.name)
        for f in dataclasses.fields(cell.agent_config)
        if f.name not in space.grid and f.name not in space.random
    }
    return sweeps.SweepSpec.build(
        cell.agent,
        cell.env,
        space,
        seeds=seeds,
        eval_seeds=table.get("eval_seeds", seeds),
        select=table.get("select", "return"),
        base_overrides=base,
        env_overrides=cell.env_overrides,
        train_overrides=dataclasses.asdict(cell.train_config),
    )


def _suite_path(name_or_path: str) -> Path:
    """A suite's file: NAME.toml in benchmarks/suites/, or the path given."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(f"unknown suite {name_or_path!r}; valid: {', '.join(names())}")
    elif not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    return path


def _read(path: Path) -> _SuiteFile:
    """The suite file's text and parsed TOML."""
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"suite file {path.name} is not valid TOML: {err}") from None
    return _SuiteFile(path, text, data)


def _is_seed_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_top_level(suite_file: _SuiteFile, seeds: int | None) -> tuple[str, int]:
    """The suite's kind and seeds per cell (--seeds, where given), once its top-level keys,
    kind and seeds are valid."""
    data = suite_file.data
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        suite_file.fail(
            unknown[0], f"unknown key {unknown[0]!r}; valid: {', '.join(sorted(_TOP_KEYS))}"
        )
    kind = data.get("kind", "train")
    if kind not in KINDS:
        suite_file.fail("kind", f"kind={kind!r}; valid: {', '.join(KINDS)}")
    suite_seeds = seeds if seeds is not None else data.get("seeds", 8)
    if not _is_seed_count(suite_seeds):
        if seeds is not None:
            raise ConfigError(f"--seeds={seeds} must be >= 1")
        suite_file.fail("seeds", f"seeds={suite_seeds!r} must be an integer >= 1")
    return kind, suite_seeds


def _suite_wide(
    suite_file: _SuiteFile, suite_seeds: int, seeds: int | None, steps: int | None
) -> _SuiteWide:
    """A train suite's agents, envs and suite-wide tables, validated."""
    data, fail = suite_file.data, suite_file.fail
    agent_names = data.get("agents")
    if not isinstance(agent_names, list) or not agent_names:
        fail("agents", "agents must be a non-empty list of agent names")
    env_tables = data.get("envs")
    if not isinstance(env_tables, dict) or not env_tables:
        fail("envs", 'envs must be a table of [envs."NAME"] sections')
    for agent in agent_names:
        if agent not in agents.names():
            fail(agent, f"unknown agent {agent!r}; valid: {', '.join(agents.names())}")
    duplicated = sorted({a for a in agent_names if agent_names.count(a) > 1})
    if duplicated:
        fail("agents", f"agents lists {duplicated[0]!r} more than once; list each agent once")
    common_train = dict(data.get("train", {}))
    if steps is not None:
        common_train["total_steps"] = steps
    _check_train_keys(suite_file, common_train)
    return _SuiteWide(agent_names, data.get("agent", {}), common_train, suite_seeds, seeds, steps)


def _train_cells(suite_file: _SuiteFile, wide: _SuiteWide) -> tuple[list[CellSpec], list[int]]:
    """Every agent x env cell of a train suite, env by env, and each cell's seeds."""
    cells, cell_seeds = [], []
    for env_name, table in suite_file.data["envs"].items():
        env_cells, env_seeds = _env_cells(suite_file, wide, env_name, table)
        cells += env_cells
        cell_seeds += [env_seeds] * len(env_cells)
    return cells, cell_seeds


def _check_train_keys(suite_file: _SuiteFile, train: dict) -> None:
    for key in train:
        if key not in _TRAIN_KEYS:
            suite_file.fail(
                key, f"unknown train key {key!r}; valid: {', '.join(sorted(_TRAIN_KEYS))}"
            )


def _env_cells(
    suite_file: _SuiteFile, wide: _SuiteWide, env_name: str, table
) -> tuple[list[CellSpec], int]:
    """The cells of one [envs."NAME"] table, one per agent, and its seeds per cell."""
    _check_env_table(suite_file, env_name, table)
    env_train = _env_train(suite_file, wide, table)
    env_agent = table.get("agent", {})
    # The suite-wide [agent] table is checked here, after the env's own keys, so that of two
    # mistakes in a file the one reported is the same as it has always been.
    _check_agent_keys(suite_file, wide.agent, wide.agents)
    _check_agent_keys(suite_file, env_agent, wide.agents)
    cells = []
    for agent in wide.agents:
        overrides = _agent_overrides(agent, wide.agent, env_agent)
        try:
            cells.append(
                CellSpec.build(agent, env_name, overrides, table.get("params", {}), env_train)
            )
        except (ConfigError, envs.EnvError) as err:
            suite_file.fail(env_name, f"{agent} on {env_name}: {err}")
    return cells, _env_seeds(suite_file, wide, env_name, table)


def _check_env_table(suite_file: _SuiteFile, env_name: str, table) -> None:
    fail = suite_file.fail
    if env_name not in envs.names():
        fail(env_name, f"unknown environment {env_name!r}; valid: {', '.join(envs.names())}")
    if not isinstance(table, dict):
        fail(env_name, f'envs."{env_name}" must be a table')
    bad = sorted(set(table) - _ENV_KEYS)
    if bad:
        fail(
            bad[0],
            f"unknown key {bad[0]!r} under {env_name}; valid: {', '.join(sorted(_ENV_KEYS))}",
        )


def _env_train(suite_file: _SuiteFile, wide: _SuiteWide, table: dict) -> dict:
    """The training overrides on one env: the suite's [train], the env's, then --steps."""
    env_train = {**wide.train, **table.get("train", {})}
    if wide.cli_steps is not None:
        env_train["total_steps"] = wide.cli_steps
    _check_train_keys(suite_file, env_train)
    return env_train


def _agent_overrides(agent: str, common_agent: dict, env_agent: dict) -> dict:
    """One agent's config overrides on one env, from the keys of its Config in each layer.
    Later layers win: suite-wide, suite-wide [agent.NAME], env-wide, env [agent.NAME]."""
    fields = {f.name for f in dataclasses.fields(agents.module(agent).Config)}
    overrides = {}
    for layer in (common_agent, common_agent.get(agent, {}), env_agent, env_agent.get(agent, {})):
        overrides.update({k: v for k, v in layer.items() if k in fields})
    return overrides


def _env_seeds(suite_file: _SuiteFile, wide: _SuiteWide, env_name: str, table: dict) -> int:
    """Seeds per cell on one env: --seeds, else the env's own count, else the suite's."""
    env_seeds = wide.cli_seeds if wide.cli_seeds is not None else table.get("seeds", wide.seeds)
    if not _is_seed_count(env_seeds):
        suite_file.fail(
            "seeds",
            f'envs."{env_name}" seeds={env_seeds!r} must be an integer >= 1',
            section=env_name,
        )
    return env_seeds


def _check_agent_keys(suite_file: _SuiteFile, overrides: dict, agent_names: list[str]) -> None:
    """A key no agent of the suite has is a typo: name it with the keys that would be valid."""
    fail = suite_file.fail
    fields = {a: {f.name for f in dataclasses.fields(agents.module(a).Config)} for a in agent_names}
    shared = set().union(*fields.values())
    for key, value in overrides.items():
        if key in fields:
            if not isinstance(value, dict):
                fail(key, f"[agent.{key}] must be a table of {key} config overrides")
            for sub in value:
                if sub not in fields[key]:
                    fail(sub, f"unknown {key} key {sub!r}; valid: {', '.join(sorted(fields[key]))}")
        elif key not in shared:
            fail(key, f"unknown agent key {key!r}; valid: {', '.join(sorted(shared))}")


def cell_fingerprint(spec: CellSpec, seed_ids, base_seed: int) -> str:
    """What makes a finished cell reusable on a rerun: its full spec and its seeds."""
    payload = json.dumps(
        {"spec": spec.to_json(), "seeds": list(seed_ids), "base_seed": base_seed}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cell_path(out_dir: Path, spec: CellSpec) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{spec.agent}__{spec.env}")
    return out_dir / "cells" / f"{safe}.json"


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    base_seed: int = 0,
    seed_start: int = 0,
    show_progress: bool = True,
    rerun: bool = False,
    log=print,
    checkpoint_every: int | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every cell not already finished in out_dir; then write results.json and the report.
    A cell being trained keeps checkpoints in checkpoint_dir/CELL (default out_dir/checkpoints/;
    `checkpoint_every` as `cell_checkpoints`), removed once the cell is written.

    Each finished cell is written atomically to out_dir/cells/, so a killed run resumes from the
    cells it finished and never leaves a half-written file. A finished cell is kept when its
    spec and seeds are unchanged, whatever code produced it (the log names its commit when that
    differs from this one); rerun=True runs every cell again, e.g. after changing an agent.
    """
    out_dir = Path(out_dir)
    if suite.kind == "dopamine":
        from benchmarks import dopamine

        return dopamine.run_dopamine_analysis(out_dir, **suite.options)
    if suite.kind == "sweep":
        return run_sweep_suite(
            suite,
            out_dir,
            base_seed=base_seed,
            seed_start=seed_start,
            show_progress=show_progress,
            rerun=rerun,
            log=log,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
        )
    records = []
    for index, (spec, num_seeds) in enumerate(zip(suite.cells, suite.cell_seeds), 1):
        seed_ids = list(range(seed_start, seed_start + num_seeds))
        fingerprint = cell_fingerprint(spec, seed_ids, base_seed)
        path = cell_path(out_dir, spec)
        cached = None if rerun else _finished(path, "cell", fingerprint)
        if cached is not None:
            log(f"[{index}/{len(suite.cells)}] {spec.name}: finished earlier{_at(cached)}, kept")
            records.append(cached["cell"])
            continue
        log(
            f"[{index}/{len(suite.cells)}] {spec.name}: {num_seeds} seeds x "
            f"{spec.train_config.total_steps:,} steps"
        )
        folder = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
        checkpoints = cells.cell_checkpoints(
            spec, seed_ids, base_seed, folder / path.stem, checkpoint_every, log, rerun
        )
        record = cells.run_cell(
            spec,
            seed_ids,
            base_seed=base_seed,
            show_progress=show_progress,
            checkpoints=checkpoints,
        )
        if distributed.is_main_process():
            results_io.write_json(
                path,
                {
                    "kind": "cell",
                    "metadata": results_io.metadata(),
                    "fingerprint": fingerprint,
                    "cell": record,
                },
            )
        if checkpoints is not None:
            checkpoints.finished()
        records.append(record)
    payload = {
        "kind": "suite",
        "suite": suite.name,
        "suite_source": suite.source,
        "metadata": results_io.metadata(),
        "cells": records,
    }
    if distributed.is_main_process():
        results_io.write_json(out_dir / "results.json", payload)
        from benchmarks import report

        report.write_report(out_dir, payload)
    return payload


def run_sweep_suite(
    suite: Suite,
    out_dir: Path,
    *,
    base_seed: int = 0,
    seed_start: int = 0,
    show_progress: bool = True,
    rerun: bool = False,
    log=print,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
) -> dict[str, Any]:
    """A sweep suite: every agent x env cell swept over the [sweep] table's space, each sweep
    written atomically to out_dir/sweeps/ when it finishes (kept on a rerun while its
    definition is unchanged), then results.json and the report. The sweep being run keeps
    checkpoints in checkpoint_dir/CELL (default out_dir/checkpoints/; see
    `sweep.sweep_checkpoints`), removed once it is written."""
    from benchmarks import sweep as sweeps

    table = suite.sweep
    max_memory = sweeps.parse_bytes(table["max_memory"]) if "max_memory" in table else None
    records = []
    for index, (cell, num_seeds) in enumerate(zip(suite.cells, suite.cell_seeds), 1):
        spec = sweep_spec(cell, table, table["space"], seeds=num_seeds)
        fingerprint = sweep_fingerprint(spec, seed_start, base_seed)
        path = out_dir / "sweeps" / cell_path(out_dir, cell).name
        cached = None if rerun else _finished(path, "sweep-part", fingerprint)
        if cached is not None:
            log(f"[{index}/{len(suite.cells)}] {spec.name}: finished earlier{_at(cached)}, kept")
            records.append(cached["sweep"])
            continue
        log(f"[{index}/{len(suite.cells)}] {spec.name}: sweep")
        folder = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
        checkpoints = sweeps.sweep_checkpoints(
            spec, seed_start, base_seed, folder / path.stem, checkpoint_every, log, rerun
        )
        record = sweeps.run_sweep(
            spec,
            seed_start=seed_start,
            base_seed=base_seed,
            max_memory=max_memory,
            log=log,
            show_progress=show_progress,
            checkpoints=checkpoints,
        )
        if distributed.is_main_process():
            payload = {"kind": "sweep-part", "metadata": results_io.metadata()}
            results_io.write_json(path, {**payload, "fingerprint": fingerprint, "sweep": record})
        if checkpoints is not None:
            checkpoints.finished()
        records.append(record)
    payload = sweeps.sweep_payload(records, suite=suite.name, source=suite.source)
    if distributed.is_main_process():
        results_io.write_json(out_dir / "results.json", payload)
        from benchmarks import report

        report.write_report(out_dir, payload)
    return payload


def sweep_fingerprint(spec, seed_start: int, base_seed: int) -> str:
    """What makes a finished sweep reusable: every configuration, its seeds and selection."""
    payload = json.dumps(
        results_io.to_jsonable(
            {
                "configs": spec.configs,
                "env": [spec.env, spec.env_overrides],
                "train": spec.train_config,
                "seeds": [seed_start, spec.seeds, spec.eval_seeds, base_seed],
                "select": spec.select,
            }
        ),
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _finished(path: Path, kind: str, fingerprint: str) -> dict | None:
    """The finished part (a cell or a sweep) at `path` if it has this fingerprint, else None:
    missing, corrupt or stale parts are run again."""
    if not path.is_file():
        return None
    try:
        cached = results_io.read_json(path, kind=kind)
    except results_io.ResultsError:
        return None
    return cached if cached.get("fingerprint") == fingerprint else None


def _at(cached: dict) -> str:
    """' (at commit X)' where a kept part was made by other code than this checkout's."""
    commit = cached.get("metadata", {}).get("commit")
    return "" if commit == results_io.git_commit() else f" (at commit {str(commit)[:12]})"
