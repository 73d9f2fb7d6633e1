"""The search-space language: a backbone YAML whose values may be *leaves* to search over.

    {choice: [window, sliding, pooled, global]}      one of the options (scalars, zoo
                                                       names, mappings with leaves inside)
    {int: [2, 8], step: 2}                             an integer range (log: true for log scale)
    {float: [0.5, 0.95]}                               a real range (log: true, step: 0.05)

Any leaf may carry `default:` (what zoo seeds and validation use; otherwise the first
option or the lower bound). A space file:

    name: my_space            # the study's name (runs go to ./attndsl-runs/<name>/)
    task: {kind: pathfinder, resolution: 32}
    backbone: {patch: 4, stages: [...]}   # image_size, in_channels, classes come from the task
    training: {epochs: 9, batch_size: 64, lr: {float: [1e-4, 1e-2], log: true}}
    deploy: {resolution: 224, batch: 64}  # where throughput is measured
    constraints: {max_params: 5e6}
    pruning: {min_epochs: 1, eta: 3}

Conditional axes: a choice whose options are mappings opens a branch, and the leaves inside
an option exist only when that option is chosen. Under a tagged axis (`application`,
`parameterization`, `normalization`) a `kind: {choice: …}` does the same for its siblings:
`size` exists only for the kinds that have a size. One candidate is one concrete backbone.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from pydantic import Field, ValidationError, model_validator

from ..errors import SpecError
from ..model.spec import (Backbone, model_error, read_yaml_source, validate_backbone)
from ..model.train import Training
from ..lang import models as m
from ..lang.io import _TAGGED, _dotted, _line_of, _parse_yaml
from .tasks import Task, task_shape

Int, Float = m.Int, m.Float
LEAF_KEYS = {"choice": {"default"}, "int": {"step", "log", "default"},
             "float": {"step", "log", "default"}}


# ---------------------------------------------------------------- leaves
@dataclass(frozen=True)
class Leaf:
    """One searchable value: its parameter name (the path, with the chosen option of every
    enclosing choice), its kind and its options / bounds."""
    name: str
    path: tuple
    kind: str                 # choice | int | float
    options: tuple = ()       # choice: the options as written
    labels: tuple = ()        # choice: what Optuna records (scalars; mapping options by name)
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    default: Any = None

    def default_value(self):
        if self.kind == "choice":
            return self.default if self.default is not None else self.labels[0]
        return self.default if self.default is not None else self.low

    def option(self, label):
        """The option (as written) for a recorded label."""
        return self.options[self.labels.index(label)]

    def values_to_check(self):
        if self.kind == "choice":
            return list(self.labels)
        return [self.low, self.high]


def is_leaf(node: Any) -> bool:
    return isinstance(node, dict) and len(node.keys() & LEAF_KEYS.keys()) == 1


def parse_leaf(node: dict, name: str, path: tuple, lines: dict, origin) -> Leaf:
    (kind,) = node.keys() & LEAF_KEYS.keys()
    where = dict(path=_dotted(path), line=_line_of(path, lines), source=origin)
    extra = set(node) - {kind} - LEAF_KEYS[kind]
    if extra:
        raise SpecError(f"unknown key(s) {sorted(extra)} in a {kind} leaf; a {kind} leaf has "
                        f"{', '.join([kind, *sorted(LEAF_KEYS[kind])])}", **where)
    value = node[kind]
    default = node.get("default")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise SpecError(f"choice must be a non-empty list of options, got {value!r}", **where)
        labels = _labels(value)
        if default is not None and default not in labels:
            raise SpecError(f"default {default!r} is not one of the options {list(labels)}",
                            **where)
        return Leaf(name, path, kind, tuple(value), labels, default=default)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise SpecError(f"{kind} must be [low, high] (two numbers), got {value!r}", **where)
    low, high = value
    if not all(math.isfinite(v) for v in value):
        raise SpecError(f"{kind} bounds must be finite numbers, got {value!r}", **where)
    if kind == "int" and not all(isinstance(v, int) for v in value):
        raise SpecError(f"int bounds must be integers, got {value!r}; use {{float: …}} for "
                        "a real range", **where)
    if low > high or (kind == "float" and low == high):
        raise SpecError(f"{kind} range [{low}, {high}] is empty: low must be below high", **where)
    step, log = node.get("step"), node.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"log must be true or false, got {log!r}", **where)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or not math.isfinite(step) or step <= 0
                             or (kind == "int" and not isinstance(step, int))):
        # .nan and .inf are YAML floats: Optuna would take them and fail every trial
        raise SpecError(f"step must be a positive {'integer' if kind == 'int' else 'finite number'}"
                        f", got {step!r}", **where)
    if log and low <= 0:
        raise SpecError(f"a log-scale range needs low > 0, got [{low}, {high}]", **where)
    if log and step not in (None, 1):
        raise SpecError("step and log cannot be combined (Optuna samples one or the other)",
                        **where)
    if default is not None and (isinstance(default, bool) or not isinstance(default, (int, float))
                                or not (low <= default <= high)):
        raise SpecError(f"default {default!r} is outside [{low}, {high}]", **where)
    return Leaf(name, path, kind, low=low, high=high, step=step, log=log, default=default)


def _labels(options: list) -> tuple:
    """Optuna records categorical values as scalars: scalar options are their own label; a
    mapping option is labelled by its `name` (or `kind`, or `base`), a list by its position."""
    labels = []
    for i, option in enumerate(options):
        if option is None or isinstance(option, (bool, int, float, str)):
            label = option
        elif isinstance(option, dict):
            label = str(option.get("name") or option.get("kind") or f"option{i}")
        else:
            label = f"option{i}"
        if label in labels:
            label = f"{label}#{i}"
        labels.append(label)
    return tuple(labels)


# ---------------------------------------------------------------- the space file
class Deploy(m.Component):
    """The shape at which throughput is measured (need not be the proxy task's)."""
    resolution: Int | None = Field(default=None, ge=1, le=8192)   # None: the task's
    batch: Int = Field(default=64, ge=1, le=65_536)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    backend: Literal["auto", "eager", "inductor"] = "auto"   # as users run it: auto
    # mixed precision: the model stays in `dtype` (float32) and torch.autocast runs its
    # matmuls and attention in this dtype, as users train and often serve
    autocast: Literal["none", "bfloat16", "float16"] = "none"
    channels_last: bool = True     # images and conv weights channels-last (cuDNN's layout)

    @model_validator(mode="after")
    def _autocast_from_float32(self):
        if self.autocast != "none" and self.dtype != "float32":
            raise ValueError(f"autocast: {self.autocast} runs a float32 model in mixed "
                             f"precision, so dtype must be float32 (got {self.dtype}); for "
                             f"a model cast to {self.dtype} whole, leave autocast: none")
        return self
    # where a design's throughput comes from: `table` — the sum of its parts' latencies
    # in a latency table measured once (attndsl profile; parts missing from it are measured
    # as trials meet them), no compile and no timing per trial; `measured` — the whole
    # model compiled and timed in every trial
    latency: Literal["table", "measured"] = "table"
    # timing per measurement (blocked_autorange's min_run_time); the front's interleaved
    # re-measurement times each model this long per round, over 5 rounds
    measure_seconds: Float = Field(default=1.0, gt=0, le=60)


class Constraints(m.Component):
    max_params: Float | None = Field(default=None, gt=0)
    max_peak_memory_mb: Float | None = Field(default=None, gt=0)
    min_throughput: Float | None = Field(default=None, gt=0)     # images/s at the deploy shape
    max_latency_ms: Float | None = Field(default=None, gt=0)     # one deploy batch


class Pruning(m.Component):
    enabled: bool = True
    min_epochs: Int = Field(default=1, ge=1)
    eta: Int = Field(default=3, ge=2, le=16)

    def rungs(self, epochs: int) -> list[int]:
        """Rung epochs r·η^k below the full run (the full run is the last measurement)."""
        out, r = [], self.min_epochs
        while r < epochs:
            out.append(r)
            r *= self.eta
        return out


class SpaceFile(m.Component):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.-]*$")
    description: str = ""
    task: Task
    backbone: dict
    training: dict = Field(default_factory=dict)   # Training's fields; values may be leaves
    deploy: Deploy = Deploy()
    constraints: Constraints = Constraints()
    pruning: Pruning = Pruning()
    budget: str | None = None          # e.g. "15m"; --budget overrides it

    @model_validator(mode="after")
    def _budget(self):
        if self.budget is not None:
            from .budget import parse_budget
            parse_budget(self.budget)
        return self


@dataclass
class Candidate:
    backbone: Backbone
    training: Training
    params: dict


@dataclass
class SearchSpace:
    """A validated space: the file's settings, the backbone template and its leaves."""
    file: SpaceFile
    template: dict
    leaves: dict = field(default_factory=dict)       # name -> Leaf
    lines: dict = field(default_factory=dict)
    origin: str | None = None
    requires: dict = field(default_factory=dict)     # leaf name -> {leaf name: label} to reach it

    @property
    def name(self) -> str:
        return self.file.name

    # -------------------------------------------------------- candidates
    def concretize(self, pick: Callable[[Leaf], Any]) -> tuple[dict, dict, dict]:
        """The concrete backbone and training data and the params picked, walking the
        templates and asking `pick` for each leaf that exists given the choices above it."""
        data, params = self.backbone_data(pick)
        training = _walk(self.file.training, ("training",), "training", pick, params,
                         self.leaves)
        return data, training, params

    def backbone_data(self, pick: Callable[[Leaf], Any]) -> tuple[dict, dict]:
        """The concrete backbone data alone and the backbone leaves picked (what a design
        computes, without its training settings: the latency table's view)."""
        params: dict = {}
        return _walk(self.template, ("backbone",), "", pick, params, self.leaves), params

    def candidate(self, pick: Callable[[Leaf], Any]) -> Candidate:
        data, training, params = self.concretize(pick)
        backbone = validate_backbone(data, lines=self.lines, origin=self.origin,
                                     prefix=("backbone",))
        try:
            config = Training.model_validate(training)
        except ValidationError as exc:
            raise model_error(exc, training, self.lines, self.origin, Training,
                              prefix=("training",)) from None
        return Candidate(backbone, config, params)

    def fixed(self, values: dict | None = None) -> Candidate:
        """The candidate with the given leaf values and every other leaf at its default."""
        values = values or {}
        return self.candidate(lambda leaf: values.get(leaf.name, leaf.default_value()))

    def suggest(self, trial) -> Candidate:
        """Sample a candidate with an Optuna trial (define-by-run: only the leaves that exist
        for the choices made are suggested)."""
        return self.candidate(lambda leaf: suggest(trial, leaf))

    def seeds(self) -> dict[str, dict]:
        """Literature designs the space can express: for every zoo name offered as a stage's
        attention, the candidate that uses it in every stage offering it (other leaves at
        their defaults). {label: params}."""
        from ..zoo import zoo_names
        zoo = set(zoo_names())
        offered: dict[str, dict] = {}
        for leaf in self.leaves.values():
            if leaf.kind != "choice" or not _is_stage_attention(leaf.path):
                continue
            for label, option in zip(leaf.labels, leaf.options):
                if isinstance(option, str) and option in zoo:
                    offered.setdefault(option, {})[leaf.name] = label
        return offered


def suggest(trial, leaf: Leaf):
    if leaf.kind == "choice":
        return trial.suggest_categorical(leaf.name, list(leaf.labels))
    if leaf.kind == "int":
        return trial.suggest_int(leaf.name, int(leaf.low), int(leaf.high),
                                 step=int(leaf.step or 1), log=leaf.log)
    return trial.suggest_float(leaf.name, float(leaf.low), float(leaf.high), step=leaf.step,
                               log=leaf.log)


def _is_stage_attention(path: tuple) -> bool:
    # ("backbone", "stages", i, "attention") or an alternation item below it
    return len(path) >= 4 and path[1] == "stages" and path[3] == "attention" and all(
        isinstance(p, int) for p in path[4:])


def _walk(node, path: tuple, name: str, pick, params: dict, leaves: dict, parent_key=None):
    if is_leaf(node):
        leaf = leaves[name]
        label = pick(leaf)
        params[leaf.name] = label
        if leaf.kind != "choice":
            return int(label) if leaf.kind == "int" else float(label)
        option = leaf.option(label)
        if isinstance(option, dict) and "name" not in option and _is_stage_attention(path):
            option = {"name": str(label), **option}    # an inline spec is named by its label
        if isinstance(option, (dict, list)):
            return _walk(option, path + ("choice", leaf.labels.index(label)), f"{name}={label}",
                         pick, params, leaves, parent_key)
        return option
    if isinstance(node, dict):
        out = {}
        kind_node = node.get("kind")
        keys = list(node)
        if parent_key in _TAGGED and is_leaf(kind_node):
            kind = _walk(kind_node, path + ("kind",), _child(name, "kind"), pick, params,
                         leaves)
            out["kind"] = kind
            keys = [k for k in keys if k != "kind" and _accepts(parent_key, kind, k, node)]
        for key in keys:
            if key in out:
                continue
            out[key] = _walk(node[key], path + (key,), _child(name, key), pick, params, leaves,
                             key)
        return out
    if isinstance(node, list):
        return [_walk(item, path + (i,), f"{name}[{i}]", pick, params, leaves, parent_key)
                for i, item in enumerate(node)]
    return node


def _child(name: str, key) -> str:
    return f"{name}.{key}" if name else str(key)


def _kind_classes(axis: str) -> dict:
    return {cls.model_fields["kind"].default: cls for cls in _TAGGED[axis]}


def _accepts(axis: str, kind, key: str, node: dict) -> bool:
    """Under a tagged axis whose kind is searched: is `key` a field of the chosen kind? A
    key that no offered kind has is kept, so that validation reports it as unknown."""
    classes = _kind_classes(axis)
    if kind in classes and key in classes[kind].model_fields:
        return True
    offered = node["kind"].get("choice", []) if isinstance(node["kind"], dict) else []
    return not any(key in classes[k].model_fields for k in offered if k in classes)


# ---------------------------------------------------------------- loading a space
def is_space_data(data: Any) -> bool:
    return isinstance(data, dict) and "backbone" in data and "task" in data


def load_space(source: Union[str, os.PathLike, dict]) -> SearchSpace:
    """Load and validate a search space. Every leaf is checked, and every option of every
    choice (and both ends of every range) is checked to give a valid backbone structure, so
    that a typo in the tenth option is an error now, not a failed trial in an hour.
    Bind-time rules (a window larger than a stage's grid) are per candidate: such a
    candidate is recorded as infeasible by the search."""
    if isinstance(source, dict):
        data, lines, origin = source, {}, None
    else:
        text, origin = read_yaml_source(source, what="search space")
        data, lines = _parse_yaml(text, origin, "search space")
    if not is_space_data(data):
        missing = [k for k in ("task", "backbone") if k not in data]
        raise SpecError(f"a search space needs {' and '.join(repr(k) for k in missing)} "
                        "(keys: name, task, backbone, training, deploy, constraints, pruning, "
                        "budget)", line=1, source=origin)
    try:
        space_file = SpaceFile.model_validate(data)
    except ValidationError as exc:
        raise model_error(exc, data, lines, origin, SpaceFile) from None
    template = _complete_template(space_file, data["backbone"], lines, origin)
    space = SearchSpace(space_file, template, lines=lines, origin=origin)
    _collect_leaves(template, ("backbone",), "", space, {}, None)
    _collect_leaves(space_file.training, ("training",), "training", space, {}, None)
    _check_options(space)
    return space


def _complete_template(space_file: SpaceFile, backbone: dict, lines, origin) -> dict:
    """The backbone template with what the task decides (image size, channels, classes)."""
    size, channels, classes = task_shape(space_file.task)
    template = {"name": space_file.name, **copy.deepcopy(backbone)}
    for key, value in (("image_size", size), ("in_channels", channels), ("classes", classes)):
        if value is None:
            continue
        if key in backbone and backbone[key] != value:
            raise SpecError(f"backbone.{key} is {backbone[key]!r} but the task gives {value}; "
                            f"leave {key} out (the task sets it)", path=f"backbone.{key}",
                            line=_line_of(("backbone", key), lines), source=origin)
        template[key] = value
    return template


def _collect_leaves(node, path: tuple, name: str, space: SearchSpace, requires: dict,
                    parent_key) -> None:
    if is_leaf(node):
        leaf = parse_leaf(node, name, path, space.lines, space.origin)
        space.leaves[name] = leaf
        space.requires[name] = dict(requires)
        if leaf.kind == "choice":
            for i, (label, option) in enumerate(zip(leaf.labels, leaf.options)):
                if isinstance(option, (dict, list)):   # its leaves sit at choice[i] in the YAML
                    _collect_leaves(option, path + ("choice", i), f"{name}={label}", space,
                                    {**requires, name: label}, parent_key)
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in LEAF_KEYS:
                raise SpecError(f"'{key}' is a leaf key but this mapping has other keys too "
                                f"({', '.join(sorted(map(str, node)))}); a leaf is "
                                f"{{{key}: …}} alone", path=_dotted(path),
                                line=_line_of(path, space.lines), source=space.origin)
            here = dict(requires)
            kind_node = node.get("kind")
            if parent_key in _TAGGED and is_leaf(kind_node) and key != "kind":
                # reaching a kind-conditional key needs a kind that has it
                classes = _kind_classes(parent_key)
                having = [k for k in kind_node.get("choice", []) if k in classes
                          and key in classes[k].model_fields]
                if having:
                    here[_child(name, "kind")] = having[0]
            _collect_leaves(value, path + (key,), _child(name, key), space, here, key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _collect_leaves(item, path + (i,), f"{name}[{i}]", space, requires, parent_key)


def _check_options(space: SearchSpace) -> None:
    space.fixed()   # all defaults
    for leaf in space.leaves.values():
        for value in leaf.values_to_check():
            values = {**space.requires[leaf.name], leaf.name: value}
            try:
                space.candidate(lambda lf: values.get(lf.name, lf.default_value()))
            except SpecError as exc:
                what = (f"option {value!r} of this choice" if leaf.kind == "choice"
                        else f"the {'low' if value == leaf.low else 'high'} end {value!r} of this range")
                inner = f"at '{exc.path}': " if exc.path and exc.path != _dotted(leaf.path) else ""
                raise SpecError(f"{what} gives an invalid backbone: {inner}{exc.detail}",
                                path=_dotted(leaf.path), line=_line_of(leaf.path, space.lines),
                                source=space.origin) from None


def option_warnings(space: SearchSpace) -> list[str]:
    """Options that do not bind with every other leaf at its default (a window that does
    not divide its stage's grid, a layout a kind refuses): not errors — another combination
    may bind, and the search records the rest as infeasible — but worth a look, since an
    option that binds with nothing wastes a share of the search."""
    from ..model.net import bind_stages
    out = []
    for leaf in space.leaves.values():
        for value in leaf.values_to_check():
            values = {**space.requires[leaf.name], leaf.name: value}
            try:
                bind_stages(space.fixed(values).backbone)
            except SpecError as exc:
                where = f"line {_line_of(leaf.path, space.lines)}, " if space.lines else ""
                out.append(f"{where}'{_dotted(leaf.path)}' = {value!r} (others at their "
                           f"defaults) does not bind: at '{exc.path}': {exc.detail}")
    return out


def similar_leaf(space: SearchSpace, name: str) -> str:
    close = difflib.get_close_matches(name, list(space.leaves), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""

