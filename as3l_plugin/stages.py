"""A small cached-stage runner: a job is a list of :class:`Stage`; each writes files into
its own directory and is skipped when nothing it reads changed.

A stage's directory is ``<root>/<stage name>/``; :func:`run_stages` runs a list of stages in
order, :func:`run_stage` one stage (for callers that schedule stages themselves), and
:func:`run_lock` keeps two processes from writing one root. The runner knows nothing about
the work itself: what a stage does is its ``fn`` (see :mod:`as3l_plugin.pipeline` for the
AS3L job and :mod:`as3l_plugin.bench` for the benchmark grid).

Cache keys
----------
A stage's key is the SHA-256 of ``(stage name, its parameters, the fingerprints of the
stages it reads, the package version)``; a parameter that names a user file
(:func:`file_param`) enters the key by the file's SHA-256, not its path. A stage's
*fingerprint* is the SHA-256 of its key and the checksums of its declared output files, so a
downstream stage re-runs exactly when something it reads changed (a forced re-run of a
deterministic stage that reproduces the same bytes does not invalidate its dependants).

``stage.json`` (key, params, inputs, output checksums, result, wall time) is written **last**,
atomically: its presence with a matching key and intact outputs is what "done" means. A
stage that must re-run first deletes its ``stage.json``.

Resume
------
Before running, a stage writes ``.running.json`` holding its key. If the process dies, the
next run finds the marker: a *resumable* stage (one that checkpoints its own progress) with
the same key keeps its partial files and continues from its own checkpoint; any other stage (or a
resumable one whose key changed) starts from an empty directory. A resumed stage that knows what
its earlier runs spent on the work it keeps (:meth:`StageContext.add_earlier_time`) records the
whole stage's time in ``wall_s`` / ``cpu_s``, and this run's alone in ``this_run_wall_s`` /
``this_run_cpu_s``. A lock file
(``<root>/.lock``) stops two runs from writing the same directory at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from . import __version__
from .errors import ConfigError, OutputError
from .io import atomic_write_json, sha256_file
from .timing import cpu_seconds

STAGE_FILE = "stage.json"
RUNNING_FILE = ".running.json"
LOCK_FILE = ".lock"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(name: str, params: Mapping[str, Any], inputs: Mapping[str, str],
              version: str = __version__) -> str:
    """SHA-256 hex of ``(name, params, input fingerprints, version)`` in canonical JSON."""
    payload = {"stage": name, "params": params, "inputs": dict(inputs), "version": version}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def file_param(path) -> Dict[str, str]:
    """A parameter naming a user file: enters cache keys by content (SHA-256), not by path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", path=path)
    return {"path": str(path), "sha256": sha256_file(path)}


@dataclass(frozen=True)
class StageRecord:
    """What a finished stage left: its directory, key, fingerprint, outputs and result."""
    name: str
    dir: Path
    key: str
    fingerprint: str
    outputs: Dict[str, Dict[str, Any]]
    result: Dict[str, Any]
    wall_s: float
    cached: bool = False
    cpu_s: float = float("nan")

    def path(self, rel: str) -> Path:
        return self.dir / rel


@dataclass
class StageContext:
    """What a stage function gets: its directory, parameters, upstream records, resume flag."""
    name: str
    dir: Path
    params: Dict[str, Any]
    inputs: Dict[str, StageRecord]
    resuming: bool
    log: Callable[[str], None]
    env: Dict[str, Any] = field(default_factory=dict)
    earlier_wall_s: float = 0.0
    earlier_cpu_s: float = 0.0

    def add_earlier_time(self, wall_s: float, cpu_s: Optional[float]) -> None:
        """Count the time that earlier, killed runs of this (resumed) stage spent on the work
        this run continues from, as the stage's own checkpoints account for it. The record's
        ``wall_s`` / ``cpu_s`` are then the whole stage's, not only this run's; ``cpu_s`` is
        unknown (NaN in the record, ``null`` in ``stage.json``) when the earlier CPU time is
        (``None``)."""
        self.earlier_wall_s += float(wall_s)
        self.earlier_cpu_s += float("nan") if cpu_s is None else float(cpu_s)


@dataclass(frozen=True)
class Stage:
    """One step of a job.

    Parameters
    ----------
    name : str
        Also the sub-directory of the run directory the stage writes into.
    fn : callable(StageContext) -> dict
        Does the work, writes files into ``ctx.dir``, returns a JSON-able result dict
        (stored in ``stage.json``, available downstream as ``record.result``).
    inputs : tuple of str
        Names of the stages whose outputs ``fn`` reads (they must come earlier).
    params : dict
        JSON-able parameters; they are part of the cache key.
    outputs : tuple of str
        Files (relative to the stage directory) that downstream stages read; they are
        checksummed into the stage's fingerprint and verified before a cache hit.
    resumable : bool
        Keep partial files across a kill (the stage resumes from its own checkpoint).
    env : dict
        Run-time settings that do not change the result and stay out of the cache key
        (device, data directory, thread count).
    """
    name: str
    fn: Callable[[StageContext], Mapping[str, Any]]
    inputs: tuple = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple = ()
    resumable: bool = False
    env: Mapping[str, Any] = field(default_factory=dict)


def _file_info(path: Path) -> Dict[str, Any]:
    st = path.stat()
    return {"sha256": sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _outputs_intact(sdir: Path, outputs: Mapping[str, Mapping[str, Any]]) -> bool:
    """Declared outputs still exist with their recorded content (hash only if size/mtime moved)."""
    for rel, info in outputs.items():
        p = sdir / rel
        if not p.is_file():
            return False
        st = p.stat()
        if st.st_size != info.get("size"):
            return False
        if st.st_mtime_ns != info.get("mtime_ns") and sha256_file(p) != info.get("sha256"):
            return False
    return True


def _fingerprint(key: str, outputs: Mapping[str, Mapping[str, Any]]) -> str:
    return hashlib.sha256(_canonical(
        {"key": key, "outputs": {k: v["sha256"] for k, v in outputs.items()}}).encode()).hexdigest()


def load_record(sdir: Path) -> Optional[StageRecord]:
    """Read ``stage.json`` of a stage directory; None if absent or unreadable."""
    try:
        d = json.loads((sdir / STAGE_FILE).read_text())
        return StageRecord(d["stage"], sdir, d["key"], d["fingerprint"], d["outputs"],
                           d.get("result", {}), float(d.get("wall_s", 0.0)), cached=True,
                           cpu_s=_float_or_nan(d.get("cpu_s")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _float_or_nan(v) -> float:
    return float("nan") if v is None else float(v)


def _json_seconds(v: float) -> Optional[float]:
    """Seconds for ``stage.json``: rounded; None (``null``) when unknown, never a bare NaN."""
    return round(v, 3) if v == v else None


def _clear_dir(sdir: Path) -> None:
    if sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True)


def lock_held(root: Path) -> Optional[bool]:
    """Whether a process holds :func:`run_lock` on ``root`` now; None when it cannot tell
    (a lock file it cannot open or lock). Creates nothing; it takes a shared lock on the file
    for an instant, which :func:`run_lock` waits out."""
    import fcntl
    path = Path(root) / LOCK_FILE
    if not path.exists():     # no lock file: no process has written here
        return False
    try:
        with open(path, "r") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False
    except OSError:
        return None


@contextlib.contextmanager
def run_lock(root: Path):
    """Exclusive lock on a run directory (one writer at a time); released on exit or death."""
    import fcntl
    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / LOCK_FILE, "a+")
    try:
        for attempt in range(10):   # a reader (lock_held) holds it for an instant at most
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    raise OutputError("another as3l process is writing this directory; wait "
                                      "for it or choose another --out", path=root) from None
                time.sleep(0.1)
        yield
    finally:
        fh.close()


def run_stage(stage: Stage, root: Path, upstream: Mapping[str, StageRecord], *,
              force: bool = False, log: Callable[[str], None] = print,
              prefix: str = "") -> StageRecord:
    """Run one stage unless its ``stage.json`` matches; see the module docstring."""
    missing = [n for n in stage.inputs if n not in upstream]
    if missing:
        raise ConfigError(f"stage {stage.name!r} reads {missing}, which did not run before it")
    inputs = {n: upstream[n].fingerprint for n in stage.inputs}
    params = dict(stage.params)
    key = cache_key(stage.name, params, inputs)
    sdir = root / stage.name
    rec = load_record(sdir)
    if (not force and rec is not None and rec.key == key
            and _outputs_intact(sdir, rec.outputs)):
        log(f"{prefix}{stage.name}: cached ({key[:12]}, ran in {rec.wall_s:.1f} s)")
        return rec

    resuming = False
    marker = sdir / RUNNING_FILE
    if rec is not None:
        (sdir / STAGE_FILE).unlink()  # invalid from now on, whatever happens next
    if stage.resumable and not force and marker.is_file():
        try:
            resuming = json.loads(marker.read_text()).get("key") == key
        except (OSError, ValueError):
            resuming = False
    if not resuming:
        _clear_dir(sdir)
    sdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"key": key, "stage": stage.name,
                               "started": datetime.now(timezone.utc).isoformat()})
    why = "resuming" if resuming else ("forced" if force else
                                       ("inputs changed" if rec is not None else "running"))
    log(f"{prefix}{stage.name}: {why} ...")
    t0, c0 = time.perf_counter(), cpu_seconds()
    ctx = StageContext(stage.name, sdir, params, {n: upstream[n] for n in stage.inputs},
                       resuming, log, dict(stage.env))
    result = dict(stage.fn(ctx) or {})
    seg_wall, seg_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    wall, cpu = seg_wall + ctx.earlier_wall_s, seg_cpu + ctx.earlier_cpu_s
    outputs = {}
    for rel in stage.outputs:
        p = sdir / rel
        if not p.is_file():
            raise OutputError(f"stage {stage.name!r} finished without writing its output "
                              f"{rel!r}", path=p)
        outputs[rel] = _file_info(p)
    fp = _fingerprint(key, outputs)
    atomic_write_json(sdir / STAGE_FILE, {
        "stage": stage.name, "key": key, "fingerprint": fp, "params": params,
        "inputs": inputs, "version": __version__, "outputs": outputs, "result": result,
        "wall_s": round(wall, 3), "cpu_s": _json_seconds(cpu), "resumed": resuming,
        **({"this_run_wall_s": round(seg_wall, 3), "this_run_cpu_s": round(seg_cpu, 3)}
           if (ctx.earlier_wall_s or ctx.earlier_cpu_s) else {}),
        "finished": datetime.now(timezone.utc).isoformat()})
    marker.unlink(missing_ok=True)
    log(f"{prefix}{stage.name}: done in {wall:.1f} s")
    return StageRecord(stage.name, sdir, key, fp, outputs, result, wall, cached=False,
                       cpu_s=cpu)


def run_stages(stages: Sequence[Stage], root, *, force: Iterable[str] = (),
               log: Callable[[str], None] = print,
               upstream: Optional[Mapping[str, StageRecord]] = None) -> Dict[str, StageRecord]:
    """Run ``stages`` in order under ``root``; returns ``{name: StageRecord}``.

    ``force`` names stages to re-run even when cached (``"all"`` forces every stage);
    dependants then re-run only if the forced stage's outputs changed. ``upstream`` supplies
    records of stages run elsewhere (e.g. shared feature stages of a benchmark).
    """
    root = Path(root)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate stage names in {names}")
    force = set(force)
    unknown = force - set(names) - {"all"}
    if unknown:
        raise ConfigError(f"--force {sorted(unknown)}: unknown stage; stages are {names} "
                          "(or 'all')")
    records: Dict[str, StageRecord] = dict(upstream or {})
    n = len(stages)
    for i, st in enumerate(stages, 1):
        records[st.name] = run_stage(st, root, records, force=("all" in force or st.name in force),
                                     log=log, prefix=f"[{i}/{n}] ")
    return records
