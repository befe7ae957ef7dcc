"""Sweeps: which values a batch sets on which node inputs, expanded into jobs.

A sweep is a list of *axes*.  Each axis sets one or more node inputs (its targets) to
each of its values in turn.  The jobs are the **cartesian product** of the axes in the
order given, the last axis varying fastest (like nested for-loops, first axis outermost).
The batch CLI orders its axes: prompts, then each ``--set`` in command-line order, then
input files, then seeds, so all seeds of one prompt are neighbours.  A sweep without axes
is a single job running the workflow as is.

Each job has a stable key (a hash of its settings), so a rerun with the same sweep finds
the jobs of the previous run in the manifest; adding values to an axis adds jobs
without disturbing the finished ones.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from .convert import is_link

SEED_INPUT_NAMES = ("seed", "noise_seed")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".exr"})
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"})


class SweepError(ValueError):
    """A sweep that does not fit the workflow; the message names the target."""


@dataclass(frozen=True)
class Target:
    """One node input: ``node_id`` is the API id (a node's ``_meta.title`` is resolved to it)."""

    node_id: str
    input: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.input}"


@dataclass(frozen=True)
class Axis:
    """``kind="value"`` sets values directly; ``kind="upload"`` values are local file
    paths, uploaded to each server and replaced by the server-side name."""

    label: str
    targets: tuple[Target, ...]
    values: tuple
    kind: Literal["value", "upload"] = "value"

    def __post_init__(self):
        if not self.values:
            raise SweepError(f"{self.label}: no values to sweep")
        if not self.targets:
            raise SweepError(f"{self.label}: no target node input")


@dataclass(frozen=True)
class Setting:
    target: Target
    value: Any
    kind: Literal["value", "upload"] = "value"


@dataclass(frozen=True)
class Job:
    index: int
    key: str
    settings: tuple[Setting, ...]

    @property
    def name(self) -> str:
        return f"job-{self.index:04d}-{self.key[:6]}"

    def describe(self) -> dict[str, Any]:
        return {str(s.target): (str(s.value) if s.kind == "upload" else s.value) for s in self.settings}


def job_key(settings: Iterable[Setting]) -> str:
    items = [[s.target.node_id, s.target.input, s.kind, str(s.value) if s.kind == "upload" else s.value]
             for s in settings]
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand(axes: Sequence[Axis]) -> list[Job]:
    """Cartesian product of the axes (first outermost, last fastest) -> jobs."""
    jobs = []
    for index, combo in enumerate(itertools.product(*[ax.values for ax in axes])):
        settings = tuple(Setting(t, value, ax.kind) for ax, value in zip(axes, combo) for t in ax.targets)
        jobs.append(Job(index, job_key(settings), settings))
    return jobs


def apply(api: Mapping[str, Any], job: Job, uploaded: Mapping[str, str] | None = None) -> dict:
    """A copy of the workflow with the job's settings; upload settings take the
    server-side name from ``uploaded`` (local path -> name)."""
    out = copy.deepcopy(dict(api))
    for s in job.settings:
        value = s.value
        if s.kind == "upload":
            if uploaded is None or str(value) not in uploaded:
                raise SweepError(f"{s.target}: {value} has not been uploaded")
            value = uploaded[str(value)]
        out[s.target.node_id].setdefault("inputs", {})[s.target.input] = value
    return out


# --------------------------------------------------------------------------- parsing


def resolve_target(api: Mapping[str, Any], text: str) -> Target:
    """``"NODE.INPUT"`` where NODE is an API id or a node title (``_meta.title``)."""
    node, sep, name = text.rpartition(".")
    if not sep or not node or not name:
        raise SweepError(f"target {text!r}: expected NODE.INPUT, e.g. 6.text or 'Positive prompt.text'")
    if node in api:
        node_id = node
    else:
        matches = [i for i, n in api.items() if (n.get("_meta") or {}).get("title") == node]
        if len(matches) != 1:
            known = ", ".join(f"{i} ({n.get('class_type')})" for i, n in api.items())
            raise SweepError(f"target {text!r}: no node {node!r} in the workflow"
                             + (" (title is ambiguous)" if matches else "") + f"; nodes: {known}")
        node_id = matches[0]
    current = api[node_id].get("inputs", {})
    if name not in current:
        raise SweepError(f"target {text!r}: node {node_id} ({api[node_id].get('class_type')}) has no input "
                         f"{name!r} in this workflow; it has {', '.join(current) or 'none'}")
    if is_link(current[name]):
        raise SweepError(f"target {text!r}: input {name!r} of node {node_id} is a link, not a value")
    return Target(node_id, name)


def parse_value(text: str) -> Any:
    """JSON scalars (numbers, true/false/null, quoted strings) or else the raw string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if not isinstance(value, (dict, list)) else text


def parse_set(api: Mapping[str, Any], text: str) -> Axis:
    """``NODE.INPUT=v1,v2,...`` or ``NODE.INPUT=[json list]``."""
    target_text, sep, values_text = text.partition("=")
    if not sep:
        raise SweepError(f"--set {text!r}: expected NODE.INPUT=v1,v2")
    target = resolve_target(api, target_text.strip())
    values_text = values_text.strip()
    if values_text.startswith("["):
        try:
            values = json.loads(values_text)
        except json.JSONDecodeError as exc:
            raise SweepError(f"--set {text!r}: invalid JSON list: {exc}") from exc
    else:
        values = [parse_value(v.strip()) for v in values_text.split(",")]
    return Axis(f"--set {target}", (target,), tuple(values))


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1,2,5-8"`` -> (1, 2, 5, 6, 7, 8)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:   # seeds are >= 0 in ComfyUI, so '-' always means a range
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                seeds += range(lo_i, hi_i + 1)
            elif part:
                seeds.append(int(part))
        except ValueError:
            raise SweepError(f"--seeds {text!r}: {part!r} is not an integer or a range a-b") from None
    if not seeds:
        raise SweepError(f"--seeds {text!r}: no seeds")
    return tuple(seeds)


def seed_targets(api: Mapping[str, Any]) -> tuple[Target, ...]:
    """Every ``seed``/``noise_seed`` input holding a value (the default seed targets)."""
    found = tuple(Target(i, name) for i, n in sorted(api.items(), key=lambda kv: kv[0])
                  for name, v in n.get("inputs", {}).items() if name in SEED_INPUT_NAMES and not is_link(v))
    if not found:
        raise SweepError("--seeds: the workflow has no seed/noise_seed input; name one with --seed-target NODE.INPUT")
    return found


def read_prompts(path: Path) -> tuple[str, ...]:
    """One prompt per line (blank lines and ``#`` comments skipped), or a JSON list of strings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(f"--prompts: cannot read {path}: {exc}") from exc
    if Path(path).suffix.lower() == ".json":
        prompts = json.loads(text)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise SweepError(f"--prompts {path}: a JSON prompts file must be a list of strings")
        return tuple(prompts)
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise SweepError(f"--prompts {path}: no prompts in the file")
    return prompts


def list_input_files(folder: Path) -> tuple[Path, ...]:
    """Images and videos of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepError(f"--inputs: {folder} is not a folder")
    files = tuple(sorted(p.resolve() for p in folder.iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    if not files:
        raise SweepError(f"--inputs: no image or video files in {folder} "
                         f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
    return files
