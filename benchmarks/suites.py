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
from typing import Any

import agents
import envs
from agents.base import ConfigError
from benchmarks import cell as cells
from benchmarks import distributed
from benchmarks import results as results_io
from benchmarks.cell import CellSpec
from benchmarks.train import TrainConfig

SUITES_DIR = Path(__file__).resolve().parent / "suites"
KINDS = ("train", "dopamine")
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
_TOP_KEYS = {"name", "description", "kind", "seeds", "agents", "envs", "agent", "train", "options"}
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


def load(name_or_path: str, *, seeds: int | None = None, steps: int | None = None) -> Suite:
    """Parse and validate a suite by name (benchmarks/suites/NAME.toml) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(f"unknown suite {name_or_path!r}; valid: {', '.join(names())}")
    elif not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"suite file {path.name} is not valid TOML: {err}") from None

    def fail(key: str, message: str, section: str | None = None):
        raise SuiteError(f"{path.name} ({_line_of(text, key, section)}): {message}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        fail(unknown[0], f"unknown key {unknown[0]!r}; valid: {', '.join(sorted(_TOP_KEYS))}")
    kind = data.get("kind", "train")
    if kind not in KINDS:
        fail("kind", f"kind={kind!r}; valid: {', '.join(KINDS)}")
    suite_seeds = seeds if seeds is not None else data.get("seeds", 8)
    if not isinstance(suite_seeds, int) or isinstance(suite_seeds, bool) or suite_seeds < 1:
        if seeds is not None:
            raise ConfigError(f"--seeds={seeds} must be >= 1")
        fail("seeds", f"seeds={suite_seeds!r} must be an integer >= 1")
    options = data.get("options", {})
    if kind != "train":
        return Suite(
            path.stem, data.get("description", ""), kind, suite_seeds, (), (), options, text
        )

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
    common_agent = data.get("agent", {})
    common_train = dict(data.get("train", {}))
    if steps is not None:
        common_train["total_steps"] = steps
    for key in common_train:
        if key not in _TRAIN_KEYS:
            fail(key, f"unknown train key {key!r}; valid: {', '.join(sorted(_TRAIN_KEYS))}")

    cells, cell_seeds = [], []
    for env_name, table in env_tables.items():
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
        env_train = {**common_train, **table.get("train", {})}
        if steps is not None:
            env_train["total_steps"] = steps
        for key in env_train:
            if key not in _TRAIN_KEYS:
                fail(key, f"unknown train key {key!r}; valid: {', '.join(sorted(_TRAIN_KEYS))}")
        env_agent = table.get("agent", {})
        _check_agent_keys(common_agent, agent_names, fail)
        _check_agent_keys(env_agent, agent_names, fail)
        for agent in agent_names:
            fields = {f.name for f in dataclasses.fields(agents.module(agent).Config)}
            # Later layers win: suite-wide, suite-wide [agent.NAME], env-wide, env [agent.NAME].
            overrides = {}
            for layer in (
                common_agent,
                common_agent.get(agent, {}),
                env_agent,
                env_agent.get(agent, {}),
            ):
                overrides.update({k: v for k, v in layer.items() if k in fields})
            try:
                cells.append(
                    CellSpec.build(agent, env_name, overrides, table.get("params", {}), env_train)
                )
            except (ConfigError, envs.EnvError) as err:
                fail(env_name, f"{agent} on {env_name}: {err}")
        env_seeds = seeds if seeds is not None else table.get("seeds", suite_seeds)
        if not isinstance(env_seeds, int) or isinstance(env_seeds, bool) or env_seeds < 1:
            fail(
                "seeds",
                f'envs."{env_name}" seeds={env_seeds!r} must be an integer >= 1',
                section=env_name,
            )
        cell_seeds += [env_seeds] * len(agent_names)
    return Suite(
        path.stem,
        data.get("description", ""),
        kind,
        suite_seeds,
        tuple(cells),
        tuple(cell_seeds),
        options,
        text,
    )


def _check_agent_keys(overrides: dict, agent_names: list[str], fail) -> None:
    """A key no agent of the suite has is a typo: name it with the keys that would be valid."""
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
) -> dict[str, Any]:
    """Run every cell not already finished in out_dir; then write results.json and the report.

    Each finished cell is written atomically to out_dir/cells/, so a killed run resumes from the
    cells it finished and never leaves a half-written file. A finished cell is kept when its
    spec and seeds are unchanged, whatever code produced it (the log names its commit when that
    differs from this one); rerun=True runs every cell again, e.g. after changing an agent.
    """
    out_dir = Path(out_dir)
    if suite.kind == "dopamine":
        from benchmarks import dopamine

        return dopamine.run_dopamine_analysis(out_dir, **suite.options)
    records = []
    current_commit = results_io.git_commit()
    for index, (spec, num_seeds) in enumerate(zip(suite.cells, suite.cell_seeds), 1):
        seed_ids = list(range(seed_start, seed_start + num_seeds))
        fingerprint = cell_fingerprint(spec, seed_ids, base_seed)
        path = cell_path(out_dir, spec)
        if not rerun and path.is_file():
            try:
                cached = results_io.read_json(path, kind="cell")
            except results_io.ResultsError:
                cached = None  # corrupt or stale: run the cell again
            if cached is not None and cached.get("fingerprint") == fingerprint:
                commit = cached.get("metadata", {}).get("commit")
                note = "" if commit == current_commit else f" (at commit {str(commit)[:12]})"
                log(f"[{index}/{len(suite.cells)}] {spec.name}: finished earlier{note}, kept")
                records.append(cached["cell"])
                continue
        log(
            f"[{index}/{len(suite.cells)}] {spec.name}: {num_seeds} seeds x "
            f"{spec.train_config.total_steps:,} steps"
        )
        record = cells.run_cell(spec, seed_ids, base_seed=base_seed, show_progress=show_progress)
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
