"""YAML load / dump of specs, and the translation of pydantic errors into `SpecError`s that
name the field path, the YAML line, the bad value and the valid choices."""
from __future__ import annotations

import difflib
import os
import re
import typing
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from . import models as m

SpecLike = typing.Union[m.Spec, dict, str, os.PathLike]

# A zoo spec is ~1 KB and ~100 YAML nodes. YAML aliases let 600 bytes expand to 10^9
# nodes (an "alias bomb"): every walk over the expanded tree is bounded by these.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_NODES = 20_000


# ---------------------------------------------------------------- loading
class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e5` and `1.0e308` as numbers as YAML 1.2 does (YAML
    1.1 wants a sign in the exponent, so PyYAML reads them as strings)."""


class SpecDumper(yaml.SafeDumper):
    """PyYAML's safe dumper with the loader's extra resolver, so that a string which
    SpecLoader would read as a number (`0E0`, `1e5`) is written quoted."""


for _cls in (SpecLoader, SpecDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))


def load_spec(source: SpecLike) -> m.Spec:
    """Load and validate a spec from a path, a YAML string, a dict or a `Spec`.

    >>> spec = load_spec("specs/swin_wmsa.yaml")          # doctest: +SKIP
    >>> spec.branches[0].application.size                  # doctest: +SKIP
    7
    """
    if isinstance(source, m.Spec):
        return source
    if isinstance(source, dict):
        return _validate(source, lines={}, origin=None)
    text, origin = _read_source(source)
    return load_spec_text(text, origin)


def load_spec_text(text: str, origin: str | None = None) -> m.Spec:
    """A spec from YAML text only: never read as a path or a zoo name (module files store
    their spec this way, so loading one never reads another file)."""
    if not isinstance(text, str):
        raise SpecError(f"spec text must be a string, got {type(text).__name__}", source=origin)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"spec text is {len(text):,} characters; a spec is a few KB (limit "
                        f"{MAX_SPEC_BYTES:,})", source=origin)
    data, lines = _parse_yaml(text, origin)
    spec = _validate(data, lines=lines, origin=origin)
    _remember_source(spec, origin, lines)
    return spec


# ---------------------------------------------------------------- where a spec came from
# The YAML lines of recently loaded specs, so that errors found later (at bind time, when
# the width and grid are known) still name the line of the field. Keyed by object
# identity, holding the spec itself (its id can't be reused while it is held); bounded.
_SOURCES: "OrderedDict[int, tuple[m.Spec, str | None, dict]]" = OrderedDict()
_SOURCES_KEPT = 256


def _remember_source(spec: m.Spec, origin: str | None, lines: dict) -> None:
    _SOURCES[id(spec)] = (spec, origin, lines)
    _SOURCES.move_to_end(id(spec))
    while len(_SOURCES) > _SOURCES_KEPT:
        _SOURCES.popitem(last=False)


def _path_parts(dotted: str) -> tuple:
    """'branches[1].application.size' → ('branches', 1, 'application', 'size')."""
    parts: list = []
    for piece in dotted.split("."):
        name, *indices = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i.isdigit())
    return tuple(parts)


def locate(spec: m.Spec, exc: SpecError) -> SpecError:
    """`exc` with the file and YAML line of the field it names, when the spec was loaded
    from YAML text in this process (else `exc` itself)."""
    entry = _SOURCES.get(id(spec))
    if entry is None or entry[0] is not spec or exc.line is not None or not exc.path:
        return exc
    _, origin, lines = entry
    parts = _path_parts(exc.path)
    if parts[:1] not in lines:      # not a field written in the file (dim, resolution …)
        return exc
    line = _line_of(parts, lines)
    located = type(exc).__new__(type(exc))
    SpecError.__init__(located, exc.detail, path=exc.path, line=line, source=origin)
    located.__dict__.update({k: v for k, v in exc.__dict__.items()
                             if k not in ("path", "line", "source", "detail")})
    return located


# spec, backbone and search-space files: YAML, or JSON (which is YAML), any letter case
YAML_SUFFIXES = (".yaml", ".yml", ".json")


def is_yaml_path(source) -> bool:
    """Whether `source` names a YAML (or JSON) file rather than holding YAML text."""
    return isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source
        and source.strip().lower().endswith(YAML_SUFFIXES))


def is_bare_word(source) -> bool:
    """A one-word string (a zoo name, or a path without a YAML suffix), not YAML text."""
    word = source.strip() if isinstance(source, str) else ""
    return bool(word) and "\n" not in word and ":" not in word and " " not in word


def _read_source(source) -> tuple[str, str | None]:
    if is_yaml_path(source):
        path = Path(source.strip() if isinstance(source, str) else source)
        return _read_text_file(path, "spec"), str(path)
    if isinstance(source, str):
        from ..zoo import zoo_names, zoo_path  # a bare zoo name such as "swin_wmsa"
        word = source.strip()
        if is_bare_word(word):
            if zoo_path(word) is None:
                if os.path.lexists(word):       # a path, but not to a YAML file
                    raise SpecError(not_a_yaml_file(word, "spec") + " nor a zoo name")
                close = difflib.get_close_matches(word, zoo_names(), n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise SpecError(f"'{word}' is neither a spec file nor a zoo spec; {hint}"
                                f"zoo names: {', '.join(zoo_names())}")
            return zoo_path(word).read_text(), str(zoo_path(word))
        return source, None
    raise SpecError(f"cannot load a spec from {type(source).__name__}; "
                    "give a path, a YAML string, a dict or an attndsl.Spec")


def _read_text_file(path: Path, what: str) -> str:
    """The text of a YAML file (a spec, a backbone, a search space), or a SpecError that
    says why not."""
    if "\x00" in str(path):
        raise SpecError(f"{what} file name {str(path)!r} contains a NUL byte: not a path; give "
                        f"the path of a {what} YAML file")
    if not path.is_file():
        from ..zoo import zoo_path
        kind = _what_path_is(path)
        if kind is not None:
            raise SpecError(f"{what} file {path} is {kind}, not a regular file; give the "
                            f"path of a {what} YAML file")
        hint = f"; the zoo has {zoo_path(path.stem)}" if what == "spec" and zoo_path(path.stem) else ""
        raise SpecError(f"{what} file not found: {path}{hint}")
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{what} file {path} is {path.stat().st_size:,} bytes; a {what} is "
                            f"a few KB (limit {MAX_SPEC_BYTES:,})")
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {what} file {path}: {exc}") from None


def not_a_yaml_file(word: str, what: str) -> str:
    """Why an existing path without a YAML suffix is not read as a `what` file."""
    kind = _what_path_is(Path(word))
    if kind == "a file":
        return (f"{word} is a file without a .yaml, .yml or .json suffix ({what} files are "
                f"YAML; rename it {word}.yaml), not a {what} file")
    return f"{word} is {kind}, not a {what} file"


def _what_path_is(path: Path) -> str | None:
    """What a path that is not a regular file is ('a directory', 'a FIFO (named pipe)', 'a
    character device (a link to /dev/urandom)' …); None when nothing is there."""
    import stat
    link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"a broken link (to {os.readlink(path)})" if path.is_symlink() else None
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a file")):
        if test(mode):
            return name + link
    return "not a regular file" + link


def _parse_yaml(text: str, origin: str | None, what: str = "spec") -> tuple[Any, dict]:
    try:
        node = yaml.compose(text, Loader=SpecLoader)
        data = yaml.load(text, Loader=SpecLoader)
    except RecursionError:
        raise SpecError(f"YAML is nested too deeply to be a {what}", source=origin) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML: {problem}", line=line, source=origin) from None
    if not isinstance(data, dict):
        raise SpecError(f"a {what} must be a YAML mapping with at least 'name', got "
                        f"{type(data).__name__}", source=origin, line=1)
    lines: dict[tuple, int] = {}
    try:
        _collect_lines(node, (), lines, budget=[MAX_SPEC_NODES])
    except SpecError as exc:
        exc.source = origin
        raise SpecError(exc.detail, path=exc.path, line=exc.line, source=origin) from None
    except RecursionError:
        raise SpecError("YAML is recursive (an alias inside its own anchor) or nested too "
                        "deeply to be a spec", source=origin) from None
    return data, lines


def _collect_lines(node, path: tuple, lines: dict, budget: list) -> None:
    """Record the 1-based line of every key and list item, keyed by its path. `budget`
    counts the nodes of the expanded tree (aliases expand): past it the YAML is refused
    before pydantic or anything else walks it."""
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(f"YAML expands to more than {MAX_SPEC_NODES:,} nodes (aliases "
                        "repeating anchors?); a spec has a few hundred", line=1)
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if path + (key,) in lines:   # PyYAML silently keeps the last one
                raise SpecError(f"key '{key}' is written twice in one mapping (lines "
                                f"{lines[path + (key,)]} and {key_node.start_mark.line + 1})",
                                path=_dotted(path + (key,)), line=key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _collect_lines(value_node, path + (key,), lines, budget)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, path + (i,), lines, budget)


def _validate(data: dict, *, lines: dict, origin: str | None) -> m.Spec:
    try:
        return m.Spec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, data, lines, origin) from None
    except RecursionError:
        raise SpecError("spec is recursive or nested too deeply", source=origin) from None


# ---------------------------------------------------------------- pydantic error -> SpecError
def _spec_error(exc: ValidationError, data: dict, lines: dict, origin: str | None) -> SpecError:
    hoisted = isinstance(data, dict) and "branches" not in data
    messages, first_path, first_line = [], "", None
    seen = set()
    errors = exc.errors(include_url=False)
    item_failed = {e["loc"][:1] for e in errors if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)}
    located = []
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in item_failed:
            continue  # pydantic's echo of a failed item: the item's own error says it all
        data_path, member = _data_path(err["loc"], data, hoisted)
        located.append((err, data_path, member))
    # a plain union (e.g. branch heads: 'rest' | int | {fraction}) reports every member;
    # keep the members the user evidently meant (a mapping → the model, a number → int …)
    fitting = [e for e in located if e[2] is None or _member_fits(*e[2])]
    for err, data_path, _ in fitting or located:
        text = _describe(err, data_path, data, hoisted)
        dotted = _dotted(data_path)
        line = _line_of(data_path, lines)
        key = (dotted, text)
        if key in seen:
            continue
        seen.add(key)
        where = (f"line {line}, " if line else "") + (f"'{dotted}'" if dotted else "spec")
        messages.append(f"{where}: {text}")
        if not first_path:
            first_path, first_line = dotted, line
    if len(messages) == 1:
        body = messages[0].split(": ", 1)[1]
        return SpecError(body, path=first_path, line=first_line, source=origin)
    return SpecError(f"{len(messages)} problems:\n  " + "\n  ".join(messages),
                     path=first_path, line=first_line, source=origin)


def _member_fits(member: str, value: Any) -> bool:
    if member in _MODEL_NAMES:
        return isinstance(value, dict)
    if member.startswith("literal["):
        return isinstance(value, str)
    # validator-wrapped members name their type last: "function-after[…, function-before[
    # check(), int]]"
    if member.startswith(("int", "constrained-int", "float")) or re.search(
            r"\b(int|float)\]*$", member):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _data_path(loc: tuple, data: Any, hoisted: bool) -> tuple[tuple, tuple | None]:
    """Pydantic's loc with union tags removed and the implicit single branch unwrapped, so
    that it names keys as they are written in the user's YAML; plus the plain-union member
    the error came from (name, value there), if any."""
    path: list = []
    member = None
    node = data
    rest = list(loc)
    if hoisted and rest[:2] == ["branches", 0]:
        rest = rest[2:]
    tag_next = False
    for part in rest:
        if tag_next and isinstance(node, dict) and part == node.get("kind"):
            tag_next = False
            continue  # discriminated-union tag, not a key
        tag_next = False
        if isinstance(part, str) and (part in _MODEL_NAMES or part.startswith(
                ("function-", "literal[", "int", "constrained-", "str", "float", "bool",
                 "tuple["))):
            member = member or (part, node)
            continue  # pydantic's name for a union member
        path.append(part)
        # the next loc part after a tagged-union field (or a positional item) is its tag
        tag_next = part in _TAGGED or (isinstance(part, int) and len(path) > 1
                                       and path[-2] in ("positional", "terms"))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]      # (a dict from Spec.model_dump() holds tuples)
        else:
            node = None
    return tuple(path), member


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


def _line_of(path: tuple, lines: dict) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _value_at(data: Any, path: tuple) -> Any:
    node = data
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _describe(err: dict, path: tuple, data: dict, hoisted: bool) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        key = path[-1] if path else "?"
        valid = _valid_keys(path[:-1], data, hoisted)
        text = f"unknown key '{key}'"
        if valid:
            close = difflib.get_close_matches(str(key), [v for v in valid if v != "kind"], n=1)
            text += (f" (did you mean '{close[0]}'?)" if close else "")
            text += f"; valid keys here: {', '.join(valid)}"
        if not hoisted and key in m.BRANCH_AXES and len(path) == 1:
            text += "; a spec with 'branches' writes the axes inside each branch"
        return text
    if kind == "missing" and path == ("branches",) and hoisted:
        return ("a spec needs the axes parameterization, normalization and application "
                "(or a list of branches, each with them)")
    if kind == "missing":
        return f"missing required key '{path[-1] if path else '?'}'"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags") or _kinds_at(path)
        got = err.get("ctx", {}).get("tag", None)
        if kind == "union_tag_not_found":
            return f"missing 'kind'; valid kinds: {tags}"
        close = difflib.get_close_matches(str(got), re.findall(r"'([^']*)'", str(tags)), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown kind {got!r}{hint}; valid kinds: {tags}"
    value = _value_at(data, path)
    if kind == "int_from_float" and path and path[-1] == "lam":
        return (f"lam must be an integer, got {value!r}: the ghost-head exponent lam must be a non-negative "
                "integer (a fractional power of a signed parameter is NaN in the official "
                "ELSA code)")
    shown = repr(value) if value is not None or kind != "none_required" else "null"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if kind == "tuple_type":   # tuples are an implementation detail: YAML has lists
        msg = "Input should be a list"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{msg[0].lower() + msg[1:]}; got {shown}"


_NESTED_MODEL = {
    "projections": m.Projections, "kernel": m.Kernel, "kernel_bank": m.KernelBank,
    "extras": m.Extras, "dropout": m.Dropout, "merge": m.Merge, "qk_width": m.QKWidth,
    "value_conv": m.ValueConv, "expand": m.GhostHead, "heads": m.HeadFraction,
}
_TAGGED = {
    "parameterization": (m.Additive, m.Hadamard),
    "normalization": m.NORMALIZATION_MODELS,
    "application": m.APPLICATION_MODELS,
    "positional": (m.Peg,),
    "terms": m.TERM_MODELS,
}


_MODEL_NAMES = {cls.__name__ for classes in _TAGGED.values() for cls in classes} | {
    cls.__name__ for cls in _NESTED_MODEL.values()}


def _kinds_at(path: tuple) -> str:
    named = [p for p in path if isinstance(p, str)]
    classes = _TAGGED.get(named[-1] if named else "", ())
    return ", ".join(repr(c.model_fields["kind"].default) for c in classes)


def _valid_keys(parent: tuple, data: dict, hoisted: bool) -> list[str]:
    """The keys the model at `parent` accepts, for 'unknown key' messages."""
    if not parent:
        keys = [k for k in m.Spec.model_fields]
        if hoisted:
            keys = [k for k in keys if k != "branches"] + list(m.BRANCH_AXES)
        return keys
    named = [p for p in parent if isinstance(p, str)]
    last = named[-1] if named else ""
    if last == "branches":
        return [k for k in m.Branch.model_fields]
    if last in _TAGGED:
        kind = (_value_at(data, parent) or {}).get("kind")
        for cls in _TAGGED[last]:
            if cls.model_fields["kind"].default == kind:
                return list(cls.model_fields)
        return []
    if last in _NESTED_MODEL:
        return list(_NESTED_MODEL[last].model_fields)
    return []


# ---------------------------------------------------------------- dumping
def spec_to_dict(spec: m.Spec) -> dict:
    """The spec as plain data, leaving out values equal to their defaults (but always
    keeping `kind` tags); a single default branch is written at the top level."""
    out = _compact(spec)
    if spec.single_branch:
        branch = out.pop("branches")[0]
        branch.pop("name", None)
        branch.pop("heads", None)
        out.update(branch)
    return out


def _compact(model: BaseModel) -> dict:
    out = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if name != "kind" and not field.is_required() and value == field.default:
            continue
        out[name] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, m.TERM_MODELS) and value == type(value)():
        return value.kind       # a term without options is written as its bare name
    if isinstance(value, BaseModel):
        return _compact(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def dump_spec(spec: m.Spec) -> str:
    """YAML text of a spec; `load_spec(dump_spec(s)) == s` for every valid spec."""
    return yaml.dump(spec_to_dict(spec), Dumper=SpecDumper, sort_keys=False,
                     default_flow_style=None, width=100)


def spec_json_schema() -> dict:
    """JSON Schema of spec files, as written: either `branches`, or one branch's axes at
    the top level (the hoisted single-branch form every single-branch zoo spec uses)."""
    schema = m.Spec.model_json_schema(mode="validation")
    terms = schema["$defs"]["Additive"]["properties"]["terms"]
    # a term is written as its bare name, or as a mapping with its options
    terms["items"] = {"anyOf": [{"enum": sorted(m.TERM_DOC)}, terms["items"]]}
    branch = schema["$defs"]["Branch"]
    props = schema["properties"]
    for axis in m.BRANCH_AXES:
        props[axis] = branch["properties"][axis]
    required_axes = [a for a in branch.get("required", []) if a in m.BRANCH_AXES]
    schema["required"] = [r for r in schema.get("required", []) if r != "branches"]
    schema["oneOf"] = [
        {"required": ["branches"], "not": {"anyOf": [{"required": [a]} for a in m.BRANCH_AXES]}},
        {"required": required_axes, "not": {"required": ["branches"]}},
    ]
    return schema


def map_zoo_names() -> list[str]:
    """The zoo specs whose forward maps a (B, H, W, C) grid to a grid: all but class
    attention (application class_tokens), which takes tokens with its class tokens first
    (forward_tokens) and outputs theirs alone."""
    from ..zoo import zoo_names
    return [name for name in zoo_names()
            if load_spec(name).branches[0].application.kind != "class_tokens"]
