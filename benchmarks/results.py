"""Canonical JSON results: metadata (commit, versions, devices, configs), per-seed values, and
atomic writes so an interrupted run never leaves a corrupt or half-written file.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
_PACKAGES = ("distbench", "jax", "jaxlib", "flax", "optax", "chex", "gymnax", "rlax", "numpy")


class ResultsError(ValueError):
    """A results file that is missing, corrupt, or from another schema version or suite."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`, so a
    reader sees the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_jsonable(value: Any) -> Any:
    """numpy arrays and scalars, dataclasses and tuples to plain JSON types (NaN -> None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, str):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _git(folder: Path, *args: str) -> str | None:
    """`git ARGS` run in `folder`: its stripped output, or None where git fails there."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _install_source() -> Path | None:
    """The local folder distbench was pip-installed from (pip records it in direct_url.json),
    so a non-editable install still finds its checkout; None otherwise."""
    try:
        text = importlib.metadata.distribution("distbench").read_text("direct_url.json")
        url = json.loads(text or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, json.JSONDecodeError):
        return None
    if not url.startswith("file://"):
        return None
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))


# What "-dirty" does not count: the published results, which `run --out results/...` rewrites
# (an earlier suite of the same session would otherwise mark the next one dirty).
RECORD_PATHSPEC = ":(top,exclude)results"


def _code_changed(folder: Path) -> bool:
    """Whether the checkout at `folder` has uncommitted changes to tracked files outside
    results/."""
    args = ("--porcelain", "--untracked-files=no", "--", ":(top)", RECORD_PATHSPEC)
    return bool(_git(folder, "status", *args))


def git_commit() -> str:
    """The commit of the code that runs ("-dirty" with uncommitted changes outside results/,
    the published record, which a run may be rewriting), read from the checkout this module
    lives in or, for a non-editable install, the one it was installed from; "unknown" where
    neither is a git checkout."""
    for folder in (Path(__file__).resolve().parent, _install_source()):
        if folder is None or not folder.is_dir():
            continue
        commit = _git(folder, "rev-parse", "HEAD")
        if commit:
            return commit + ("-dirty" if _code_changed(folder) else "")
    return "unknown"


def metadata() -> dict[str, Any]:
    """Where and with what a result was produced."""
    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "versions": versions,
        "python": platform.python_version(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(payload), indent=1, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Load a results file, or raise ResultsError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {str(path)!r} does not exist")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(
            f"results file {str(path)!r} is corrupt (not valid JSON: {err})"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("metadata"), dict):
        raise ResultsError(
            f"results file {str(path)!r} is not a distbench result (no metadata mapping)"
        )
    version = payload["metadata"].get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"results file {str(path)!r} has schema version {version!r}; this distbench reads "
            f"version {SCHEMA_VERSION} (re-run it with this version)"
        )
    if kind is not None and payload.get("kind") != kind:
        raise ResultsError(
            f"results file {str(path)!r} holds a {payload.get('kind')!r} result, expected {kind!r}"
        )
    return payload


def _check_can_create_in(folder: Path, what: str) -> None:
    """Create `folder` if needed and create (then remove) a file in it, or raise ResultsError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ResultsError(f"{what}: cannot write in {str(folder)!r} ({err.strerror})") from None


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """Fail before any work when a result file cannot be written at `path`."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{flag} {str(path)!r} is a directory; give a file path")
    _check_can_create_in(path.parent, f"{flag} {str(path)!r}")


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """Fail before any work when results cannot be written into the folder `path`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{flag} {str(path)!r} is a file; give a folder")
    _check_can_create_in(path, f"{flag} {str(path)!r}")
