"""Property tests of the spec language: whatever a user writes, attndsl answers with a Spec or
a `SpecError`, never another exception; and every valid spec survives load → dump → load.

Inputs are zoo specs mutated at random (keys deleted / added, values replaced, kind tags
changed, list items duplicated), random YAML-ish text, and zoo YAML texts edited character by
character. The number of examples per test can be raised for a long fuzzing run with
ATTNDSL_FUZZ_EXAMPLES (default 200; the whole file then takes well under 30 s).
"""
from __future__ import annotations

import copy
import math
import os
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attndsl
from attndsl import Spec, SpecError, bind, dump_spec, load_spec
from attndsl.lang import models as m
from attndsl.lang.io import spec_to_dict

EXAMPLES = int(os.environ.get("ATTNDSL_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])

ZOO_TEXT = {p.stem: p.read_text() for p in attndsl.zoo_paths()}
ZOO_DATA = {name: yaml.safe_load(text) for name, text in ZOO_TEXT.items()}
ZOO_NAMES = sorted(ZOO_DATA)


def _literals(model) -> set[str]:
    """Every string literal a model (and its nested components) accepts: plausible values."""
    out: set[str] = set()
    for field in model.model_fields.values():
        for arg in _walk_type(field.annotation):
            if isinstance(arg, str):
                out.add(arg)
            elif isinstance(arg, type) and issubclass(arg, m.Component) and arg is not model:
                out |= _literals(arg)
    return out


def _walk_type(tp) -> list:
    """The type itself and everything inside its Union / Literal / Annotated / tuple args."""
    found = [tp]
    for arg in typing.get_args(tp):
        found += _walk_type(arg) if not isinstance(arg, (str, int, float)) else [arg]
    return found


KINDS = sorted({cls.model_fields["kind"].default
                for cls in (m.Additive, m.Hadamard, m.Softmax, m.Identity, m.Relu,
                            m.LayerNormOverKernels, m.Sigmoid, m.L1, m.FilterNorm, m.Global,
                            m.Window, m.Sliding, m.Pooled, m.SoftSelect, m.Clusters, m.Peg,
                            m.GhostHead, m.QKWidth, m.Merge)})
TOKENS = sorted(_literals(m.Spec) | _literals(m.Branch) | set(KINDS))
KEYS = sorted({name for cls in (m.Spec, m.Branch, m.Projections, m.Additive, m.Hadamard,
                                m.Softmax, m.Relu, m.L1, m.FilterNorm, m.Window, m.Sliding,
                                m.Pooled, m.SoftSelect, m.Clusters, m.GhostHead, m.Kernel,
                                m.KernelBank, m.QKWidth, m.Extras, m.Dropout, m.ValueConv,
                                m.Peg, m.HeadFraction, m.Merge)
               for name in cls.model_fields})


COMPONENTS = (m.Spec, m.Branch, m.Projections, m.Additive, m.Hadamard, m.Softmax, m.Identity,
              m.Relu, m.LayerNormOverKernels, m.Sigmoid, m.L1, m.FilterNorm, m.Global, m.Window,
              m.Sliding, m.Pooled, m.SoftSelect, m.Clusters, m.GhostHead, m.Kernel,
              m.KernelBank, m.QKWidth, m.Extras, m.Dropout, m.ValueConv, m.Peg, m.HeadFraction,
              m.Merge)
# field name -> the string literals some component accepts there ('terms' -> the term names)
FIELD_TOKENS: dict[str, list[str]] = {}
for _cls in COMPONENTS:
    for _name, _field in _cls.model_fields.items():
        _lits = {a for a in _walk_type(_field.annotation) if isinstance(a, str)}
        if _lits:
            FIELD_TOKENS[_name] = sorted(set(FIELD_TOKENS.get(_name, [])) | _lits)


REQUIRED = {name for cls in COMPONENTS for name, f in cls.model_fields.items()
            if f.is_required()} | {"kind"}


def plausible(key, old):
    """A value of the same shape as `old`, and for strings one that some component accepts
    under `key`: keeps many mutated specs valid, so that valid specs get exercised too."""
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, int):
        return st.integers(1, 16) | st.integers(0, 64) | st.sampled_from(
            FIELD_TOKENS.get(key, ["rest"]))
    if isinstance(old, float):
        return st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 2.0, 1e-6, 100.0, math.inf, math.nan])
    if isinstance(old, str) and key in FIELD_TOKENS:
        return st.sampled_from(FIELD_TOKENS[key]) | st.integers(1, 8)
    if isinstance(old, str):
        return st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | st.text(max_size=20)
    return st.sampled_from(TOKENS) | st.integers(0, 16) | st.none()


def scalars(nan: bool):
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(-3, 12), st.integers(-3, 12),          # small ints are the interesting ones
        st.integers(), st.integers(13, 300),
        st.floats(allow_nan=nan), st.floats(0, 1.5, allow_nan=False),
        st.sampled_from(TOKENS), st.sampled_from(TOKENS),
        st.text(max_size=12),
    )


def values(nan: bool = True):
    return st.recursive(
        scalars(nan),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(-2, 2),
                          inner, max_size=3),
        max_leaves=6)


def _nodes(node, path=()):
    """(path, node) for the node and everything under it."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, path + (i,))


def _get(node, path):
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated_specs(draw, nan: bool = True, max_mutations: int = 4, gentle: bool = False):
    """A zoo spec (as a dict) with 0..max_mutations random mutations applied. `gentle`
    mutations (deletions, plausible values, valid kinds, duplicated items) keep about half
    of the specs valid, for the round-trip properties."""
    name = draw(st.sampled_from(ZOO_NAMES))
    data = copy.deepcopy(ZOO_DATA[name])
    ops = (["delete", "plausible", "plausible", "plausible", "duplicate"] if gentle
           else ["delete", "insert", "replace", "replace", "plausible", "plausible", "kind",
                 "duplicate", "wrap"])
    for _ in range(draw(st.integers(0, max_mutations))):
        nodes = list(_nodes(data))
        op = draw(st.sampled_from(ops))
        if op == "delete":
            choices = [(p, n) for p, n in nodes if isinstance(n, (dict, list)) and n]
            if not choices:
                continue
            path, node = draw(st.sampled_from(choices))
            keys = (sorted(node, key=repr) if isinstance(node, dict) else list(range(len(node))))
            if gentle:
                keys = [k for k in keys if k not in REQUIRED and not isinstance(k, int)]
                if not keys:
                    continue
            del node[draw(st.sampled_from(keys))]
        elif op == "insert":
            dicts = [n for _, n in nodes if isinstance(n, dict)]
            node = draw(st.sampled_from(dicts))
            key = draw(st.sampled_from(KEYS) | st.text(max_size=10))
            node[key] = draw(values(nan))
        elif op in ("replace", "plausible"):
            leaves = [(p, n) for p, n in nodes[1:] if not isinstance(n, (dict, list))]
            path, old = draw(st.sampled_from(leaves if gentle and leaves else nodes[1:]))
            parent = _get(data, path[:-1])
            key = path[-1] if not isinstance(path[-1], int) else path[-2]
            parent[path[-1]] = draw(values(nan) if op == "replace" else plausible(key, old))
        elif op == "kind":
            tagged = [n for _, n in nodes if isinstance(n, dict) and "kind" in n]
            if not tagged:
                continue
            node = draw(st.sampled_from(tagged))
            node["kind"] = draw(st.sampled_from(KINDS) if gentle
                                else st.sampled_from(KINDS) | st.text(max_size=8) | values(nan))
        elif op == "duplicate":
            lists = [n for _, n in nodes if isinstance(n, list) and n]
            if not lists:
                continue
            node = draw(st.sampled_from(lists))
            item = copy.deepcopy(draw(st.sampled_from(node)))
            node.insert(draw(st.integers(0, len(node))), item)
        elif op == "wrap":  # a value written as a one-item list, or a mapping as a list
            path, node = draw(st.sampled_from(nodes[1:]))
            _get(data, path[:-1])[path[-1]] = [copy.deepcopy(node)]
    return data


def _load(source):
    """load_spec, asserting that only SpecError escapes; returns the Spec or None."""
    try:
        spec = load_spec(source)
    except SpecError as exc:
        _check_error(exc)
        return None
    assert isinstance(spec, Spec)
    return spec


def _check_error(exc: SpecError) -> None:
    message = str(exc)
    assert message and exc.detail and exc.detail in message
    assert "Traceback" not in message
    assert isinstance(exc.path, str)
    assert exc.line is None or exc.line >= 1


bind_args = st.tuples(
    st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 100, 128])
    | st.integers(-2, 200),
    st.tuples(st.integers(1, 40), st.integers(1, 40)) | st.sampled_from([(7, 7), (14, 14),
                                                                           (56, 56), (28, 14)]),
    st.none() | st.none() | st.integers(-1, 16),
)


def _bind_ok_or_spec_error(spec: Spec, dim, res, heads) -> None:
    try:
        plan = bind(spec, dim, res, heads=heads)
    except SpecError as exc:
        _check_error(exc)
        assert exc.path, str(exc)             # bind errors always name a field
        return
    # a plan that binds is consistent
    assert plan.dim == dim and plan.heads >= 1 and plan.head_dim * plan.heads == dim
    if spec.merge.kind == "sequence":       # each branch reads the previous one's output
        assert all(bp.heads == plan.heads and bp.channels == (0, dim) for bp in plan.branches)
    else:                                   # branches split the heads
        assert sum(bp.heads for bp in plan.branches) <= plan.heads
    for bp in plan.branches:
        assert bp.heads >= 1, (bp.name, bp.heads)   # a 0-head branch is dropped
        lo, hi = bp.channels
        assert 0 <= lo < hi <= dim


# ================================================================ mutated zoo specs
@FUZZ
@given(data=mutated_specs(nan=True), draws=st.lists(bind_args, min_size=1, max_size=3))
def test_mutated_spec_loads_or_spec_error(data, draws):
    spec = _load(data)
    if spec is None:
        return
    for dim, res, heads in draws:
        _bind_ok_or_spec_error(spec, dim, res, heads)


@FUZZ
@given(data=mutated_specs(nan=True, max_mutations=3, gentle=True) | mutated_specs(nan=True))
def test_mutated_valid_spec_round_trips(data):
    spec = _load(data)
    if spec is None:
        return
    text = dump_spec(spec)
    again = load_spec(text)
    assert again == spec
    assert dump_spec(again) == text              # dumping is deterministic and a fixpoint
    assert dump_spec(spec) == text
    assert load_spec(spec_to_dict(spec)) == spec


@FUZZ
@given(data=mutated_specs(max_mutations=3, gentle=True),
       draws=st.lists(bind_args, min_size=1, max_size=2))
def test_round_trip_binds_the_same(data, draws):
    """A dumped and reloaded spec binds to the same plan (or the same error)."""
    spec = _load(data)
    if spec is None:
        return
    again = load_spec(dump_spec(spec))
    for dim, res, heads in draws:
        heads = heads if heads is None or heads >= 1 else None
        outcome = []
        for s in (spec, again):
            try:
                plan = bind(s, dim, res, heads=heads)
                outcome.append(("ok", plan.heads, tuple((b.name, b.heads, b.channels, b.qk_dim,
                                                         b.window, b.table_size)
                                                        for b in plan.branches)))
            except SpecError as exc:   # (the one loaded from text also names its line)
                outcome.append(("error", exc.path, exc.detail))
        assert outcome[0] == outcome[1]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_spec_round_trips(name):
    spec = load_spec(ZOO_TEXT[name])
    text = dump_spec(spec)
    assert load_spec(text) == spec
    assert dump_spec(load_spec(text)) == text


# ================================================================ random text
YAML_PIECES = (list("{}[]:,-?&*!|>'\"#%@` \n\t.0123456789abkn_")
               + ["name: ", "kind: ", "  ", "\n  - ", "heads: ", "application: ", "size: ",
                  ".yaml", "\ufeff", "\x00", "\u00e9", "\u2028"])
YAMLISH = st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join)


def _load_text(text: str):
    return _load(text)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_only_raises_spec_error(text):
    _load_text(text)


@FUZZ
@given(text=YAMLISH)
def test_random_yamlish_text_only_raises_spec_error(text):
    spec = _load_text(text)
    if spec is not None:
        assert load_spec(dump_spec(spec)) == spec


@st.composite
def edited_zoo_text(draw):
    """A zoo YAML text with a few character- or line-level edits."""
    text = ZOO_TEXT[draw(st.sampled_from(ZOO_NAMES))]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "insert", "dup_line", "drop_line", "indent"]))
        lines = text.split("\n")
        if op == "cut" and text:
            i = draw(st.integers(0, len(text) - 1))
            j = draw(st.integers(i, min(len(text), i + 8)))
            text = text[:i] + text[j:]
        elif op == "insert":
            i = draw(st.integers(0, len(text)))
            piece = "".join(draw(st.lists(st.sampled_from(YAML_PIECES), max_size=4)))
            text = text[:i] + piece + text[i:]
        elif op == "dup_line":
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == "drop_line" and len(lines) > 1:
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "\n".join(lines)
        elif op == "indent":
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = draw(st.sampled_from([" ", "  ", "\t", "- "])) + lines[i]
            text = "\n".join(lines)
    return text


@FUZZ
@given(text=edited_zoo_text())
def test_edited_zoo_text_only_raises_spec_error_with_sane_line(text):
    spec = _load_text(text)
    if spec is None:
        try:
            load_spec(text)
        except SpecError as exc:
            if exc.line is not None:
                # the line points into the text (or just past its end, for 'unexpected end')
                assert 1 <= exc.line <= text.count("\n") + 2, (exc.line, str(exc))
    else:
        assert load_spec(dump_spec(spec)) == spec


# ================================================================ sanity of the generators
def test_generators_reach_valid_and_invalid_specs():
    """The mutation strategy must produce both valid and invalid specs, or the properties
    above test nothing."""
    from hypothesis import find
    find(mutated_specs(), lambda d: _quiet_load(d) is not None and d not in ZOO_DATA.values(),
         settings=settings(max_examples=2000, database=None))
    find(mutated_specs(), lambda d: _quiet_load(d) is None,
         settings=settings(max_examples=2000, database=None))


def _quiet_load(data):
    try:
        return load_spec(data)
    except SpecError:
        return None
