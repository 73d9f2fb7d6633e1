"""The backbone language: a small hierarchical vision transformer described in YAML, whose
stages hold attndsl attention specs.

    name: tiny_hvit
    image_size: 32          # input images are image_size × image_size
    in_channels: 1
    classes: 2
    patch: 4                # patch embedding: conv k = s = patch → (32/4)² tokens
    stages:
      - {depth: 1, dim: 32, heads: 2, attention: none}          # MLP-only (LITv2's early stages)
      - {depth: 2, dim: 64, heads: 4, attention: swin_wmsa}      # a zoo name, or a spec mapping
      - {depth: 2, dim: 128, heads: 4, attention: [swin_wmsa, hilo]}   # alternates per block

Stage i > 0 starts with a stride-2 downsampling (conv k = s = 2 + LayerNorm, Swin's patch
merging as a conv). Errors name the field path and the YAML line like spec errors do; an
attention spec's own errors carry the stage path in front (`stages[1].attention.size`).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError
from ..lang import models as m
from ..lang.io import (MAX_SPEC_BYTES, _dotted, _line_of, _parse_yaml, _read_text_file,
                       is_bare_word, is_yaml_path, not_a_yaml_file,
                       _validate as _validate_spec, _value_at, spec_to_dict)

Int, Float = m.Int, m.Float
NO_ATTENTION = "none"    # a stage (or a block in an alternation) with no attention: MLP only


class Stage(m.Component):
    """One stage: `depth` blocks at width `dim` (pre-norm attention + MLP, residuals)."""

    depth: Int = Field(ge=1, le=64)
    dim: Int = Field(ge=1, le=16384)
    heads: Int = Field(ge=1, le=1024)
    mlp_ratio: Float = Field(default=4.0, gt=0, le=64)
    # attention of the blocks: none (MLP only), one spec, or specs alternating per block
    # (Twins' LSA/GSA, Swin's W/SW); resolved from zoo names / mappings by the loader
    attention: tuple[Union[m.Spec, Literal["none"]], ...] = ()
    stride: Int = Field(default=2, ge=1, le=8)   # downsampling before the stage (not stage 0)
    peg: bool = False          # CPVT/Twins positional encoding generator after block 1
    ffn_dwconv: bool = False   # LITv2: a 3×3 depthwise conv between the MLP's two layers

    @field_validator("attention", mode="before")
    @classmethod
    def _as_tuple(cls, value):
        if value is None:
            return ()
        if isinstance(value, (m.Spec, str)):
            return (value,)
        return value

    @model_validator(mode="after")
    def _dim_heads(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}; "
                             f"valid head counts for dim {self.dim}: "
                             f"{[h for h in range(1, min(self.dim, 32) + 1) if self.dim % h == 0]}")
        return self

    def block_attention(self, block: int) -> m.Spec | None:
        if not self.attention:
            return None
        spec = self.attention[block % len(self.attention)]
        return None if spec == NO_ATTENTION else spec


class Backbone(m.Component):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    image_size: Int = Field(ge=1, le=8192)
    in_channels: Int = Field(default=3, ge=1, le=64)
    classes: Int = Field(ge=2, le=100_000)
    patch: Int = Field(default=4, ge=1, le=64)
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=8)
    drop_path: Float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _grids(self):
        self.grids()
        return self

    def grids(self, image_size: int | None = None) -> list[tuple[int, int]]:
        """The token grid of every stage at this input size (convs floor, as PyTorch's do)."""
        size = image_size or self.image_size
        side = size // self.patch
        if side < 1:
            raise ValueError(f"image_size {size} is smaller than the patch {self.patch}")
        out = []
        for i, stage in enumerate(self.stages):
            if i:
                side //= stage.stride
                if side < 1:
                    raise ValueError(f"stage {i}'s stride {stage.stride} leaves no tokens at "
                                     f"image_size {size} (grid before it: {out[-1][0]}²)")
            out.append((side, side))
        return out


# ---------------------------------------------------------------- loading
BackboneLike = Union[Backbone, dict, str, os.PathLike]


def is_backbone_data(data: Any) -> bool:
    return isinstance(data, dict) and "stages" in data


def load_backbone(source: BackboneLike, *, lines: dict | None = None,
                  origin: str | None = None) -> Backbone:
    """A backbone from a YAML path, YAML text, a dict (`lines` maps its key paths to YAML
    lines, for errors) or a `Backbone`."""
    if isinstance(source, Backbone):
        return source
    if isinstance(source, dict):
        data, lines = source, lines or {}
    else:
        text, origin = read_yaml_source(source, what="backbone")
        data, lines = _parse_yaml(text, origin, "backbone")
    return validate_backbone(data, lines=lines, origin=origin)


_WHAT_INSTEAD = {
    "search space": "a search space is a YAML file with a task and a backbone whose "
                    "choices are searched (examples/search_digits.yaml; `attndsl validate "
                    "SPACE.yaml` checks one)",
    "backbone": "a backbone file lists stages whose attention may name zoo specs",
}


def read_yaml_source(source, *, what: str) -> tuple[str, str | None]:
    if is_yaml_path(source):
        path = Path(source.strip() if isinstance(source, str) else source)
        return _read_text_file(path, what), str(path)
    if isinstance(source, str):
        if is_bare_word(source):     # one word is no backbone or space: a name or a path
            from ..zoo import zoo_path
            word = source.strip()
            if zoo_path(word) is not None:
                raise SpecError(f"'{word}' is a zoo spec (one attention mechanism), not a "
                                f"{what} file; {_WHAT_INSTEAD.get(what, '')}".rstrip("; "))
            if os.path.lexists(word):
                raise SpecError(not_a_yaml_file(word, what))
            raise SpecError(f"{what} file not found: {word} (a {what} file is YAML: "
                            ".yaml, .yml or .json)")
        return source, None
    raise SpecError(f"cannot load a {what} from {type(source).__name__}; give a path, YAML "
                    "text or a dict")


def validate_backbone(data: dict, *, lines: dict, origin: str | None,
                      prefix: tuple = ()) -> Backbone:
    data = resolve_attention(data, lines=lines, origin=origin, prefix=prefix)
    try:
        return Backbone.model_validate(data)
    except ValidationError as exc:
        raise model_error(exc, data, lines, origin, Backbone, prefix=prefix) from None


def resolve_attention(data: dict, *, lines: dict, origin: str | None, prefix: tuple = ()) -> dict:
    """Replace every stage's attention (zoo names, spec mappings, lists of them) by `Spec`s,
    raising spec errors with the stage path and line in front."""
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list):
        return data
    out_stages = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or "attention" not in stage:
            out_stages.append(stage)
            continue
        raw = stage["attention"]
        items = raw if isinstance(raw, list) else [raw]
        here = prefix + ("stages", i, "attention")
        specs = []
        for j, item in enumerate(items):
            where = here + ((j,) if isinstance(raw, list) else ())
            specs.append(attention_spec(item, lines=lines, origin=origin, path=where))
        out_stages.append({**stage, "attention": specs})
    return {**data, "stages": out_stages}


def attention_spec(item: Any, *, lines: dict, origin: str | None, path: tuple):
    """One attention entry: `none`, a zoo name, or a spec mapping."""
    from ..zoo import zoo_names, zoo_path
    if item is None or item == NO_ATTENTION:
        return NO_ATTENTION
    if isinstance(item, m.Spec):
        return item
    if isinstance(item, str):
        if zoo_path(item) is None:
            close = difflib.get_close_matches(item, zoo_names(), n=3)
            raise SpecError(f"'{item}' is not a zoo spec" + (
                f" (did you mean {', '.join(close)}?)" if close else "") +
                f"; write '{NO_ATTENTION}', a zoo name or a spec mapping", path=_dotted(path),
                line=_line_of(path, lines), source=origin)
        return _zoo_spec(item)
    if isinstance(item, dict):
        sub_lines = {k[len(path):]: v for k, v in lines.items() if k[:len(path)] == path}
        # an inline spec needs no name of its own: it is named after where it sits
        item = {"name": "_".join(map(str, path)), **item}
        try:
            return _validate_spec(item, lines=sub_lines, origin=origin)
        except SpecError as exc:
            raise SpecError(_prefix_paths(exc.detail, _dotted(path)),
                            path=_join_path(_dotted(path), exc.path),
                            line=exc.line or _line_of(path, lines), source=origin) from None
    raise SpecError(f"attention must be '{NO_ATTENTION}', a zoo name or a spec mapping, got "
                    f"{type(item).__name__} {item!r}", path=_dotted(path),
                    line=_line_of(path, lines), source=origin)


def _join_path(outer: str, inner: str) -> str:
    if not inner:
        return outer
    return outer + (inner if inner.startswith("[") else "." + inner)


def _prefix_paths(detail: str, outer: str) -> str:
    """A nested error's "N problems" list, with every quoted path put under `outer`."""
    return re.sub(r"(\n  (?:line \d+, )?)'([^']*)'",
                  lambda mt: f"{mt.group(1)}'{_join_path(outer, mt.group(2))}'", detail)


@functools.lru_cache(maxsize=None)
def _zoo_spec(name: str) -> m.Spec:
    """A zoo spec, read once per process (a space's validation resolves each zoo option once
    per leaf value it checks; Specs are frozen, so sharing one is safe)."""
    from ..lang.io import load_spec
    return load_spec(name)


def model_error(exc: ValidationError, data: Any, lines: dict, origin: str | None,
                model: type[BaseModel], *, prefix: tuple = ()) -> SpecError:
    """A pydantic error of a (non-spec) model as a SpecError: path, YAML line, the value,
    and the valid keys for an unknown key."""
    messages, first = [], None
    # an unknown key first: it is usually also why a required key is "missing" (a typo)
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    # pydantic echoes a failed list item as "too short" on the list: the item's error says it
    failed_items = {e["loc"][:1] for e in errors if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)}
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in failed_items:
            continue
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p in ("Spec", "function-after[_dim_heads(), Stage]") or p.startswith(
                ("function-", "literal[", "tuple[", "union[")))))
        path = prefix + loc
        value = _value_at(data, loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            keys = list(_model_at(model, loc[:-1]).model_fields)
            close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
            msg = (f"unknown key '{loc[-1]}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                   + f"; valid keys here: {', '.join(keys)}")
        elif err["type"] == "missing":
            msg = f"missing required key '{loc[-1]}'"
        elif value is not None and not isinstance(value, (dict, list)):
            msg = f"{msg[0].lower()}{msg[1:]}; got {value!r}"
        line = _line_of(path, lines)
        messages.append((_dotted(path), line, msg))
        first = first or (_dotted(path), line)
    if len(messages) == 1:
        path, line, msg = messages[0]
        return SpecError(msg, path=path, line=line, source=origin)
    body = "\n  ".join((f"line {ln}, " if ln else "") + f"'{p}': {msg}" for p, ln, msg in messages)
    return SpecError(f"{len(messages)} problems:\n  {body}", path=first[0], line=first[1],
                     source=origin)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The pydantic model class at a loc (for the valid keys of 'unknown key' errors)."""
    import typing
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return current
        candidates = [field.annotation]
        while candidates:
            ann = candidates.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                current = ann
                break
            candidates.extend(a for a in typing.get_args(ann) if a is not Ellipsis)
    return current


# ---------------------------------------------------------------- dumping, hashing
def backbone_to_dict(backbone: Backbone) -> dict:
    """Plain data that `load_backbone` reads back to an equal backbone; attention specs are
    written out in full (a file that stands alone, with no zoo lookups)."""
    out: dict = {}
    for name, field in Backbone.model_fields.items():
        value = getattr(backbone, name)
        if name == "stages":
            out["stages"] = [_stage_to_dict(s) for s in value]
        elif field.is_required() or value != field.default:
            out[name] = value
    return out


def _stage_to_dict(stage: Stage) -> dict:
    out: dict = {}
    for name, field in Stage.model_fields.items():
        value = getattr(stage, name)
        if name == "attention":
            specs = [NO_ATTENTION if s == NO_ATTENTION else spec_to_dict(s) for s in value]
            out["attention"] = (NO_ATTENTION if not specs else specs[0] if len(specs) == 1
                                else specs)
        elif field.is_required() or value != field.default:
            out[name] = value
    return out


def dump_backbone(backbone: Backbone) -> str:
    return yaml.safe_dump(backbone_to_dict(backbone), sort_keys=False, width=100,
                          default_flow_style=None)


def canonical_hash(backbone: Backbone) -> str:
    """A hash of what the backbone computes: names, papers and descriptions (of the
    backbone and of its attention specs) are left out, so two spellings of one design hash
    alike and a search recognises the duplicate."""
    data = backbone_to_dict(backbone)
    for key in ("name", "description"):
        data.pop(key, None)
    for stage in data["stages"]:
        att = stage.get("attention")
        for spec in (att if isinstance(att, list) else [att]):
            if isinstance(spec, dict):
                for key in ("name", "paper", "description"):
                    spec.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


MAX_BACKBONE_BYTES = MAX_SPEC_BYTES
