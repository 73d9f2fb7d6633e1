"""YAML load / dump of specs: the zoo round-trips exactly, single-branch specs are written
with their axes hoisted to the top level, every accepted source form gives the same Spec, and
`attndsl schema` prints a JSON Schema that describes the same language."""
from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import pydantic
import pytest
import yaml

import attndsl
from attndsl import SpecError, dump_spec, load_spec
from attndsl.cli import main as cli_main
from attndsl.lang import models as m
from attndsl.lang.io import spec_to_dict

ZOO = attndsl.zoo_paths()
ZOO_IDS = [p.stem for p in ZOO]


# ================================================================ zoo round trip
@pytest.mark.parametrize("path", ZOO, ids=ZOO_IDS)
def test_zoo_spec_round_trips_exactly(path):
    spec = load_spec(path)
    text = dump_spec(spec)
    again = load_spec(text)
    assert again == spec
    assert dump_spec(again) == text                     # a fixpoint: dumping is deterministic
    assert load_spec(spec_to_dict(spec)) == spec
    assert load_spec(spec.model_dump()) == spec         # the full (defaults written) form too
    assert text.startswith(f"name: {spec.name}\n")      # keys keep the model's order


@pytest.mark.parametrize("path", ZOO, ids=ZOO_IDS)
def test_zoo_dump_writes_no_more_than_the_author(path):
    """Dumping leaves out defaults, so what it writes is a sub-tree of the zoo YAML (the zoo
    writes some defaults explicitly, like `bias: true`, which the dump drops)."""
    raw = yaml.safe_load(path.read_text())
    dumped = spec_to_dict(load_spec(path))
    _assert_subtree(dumped, raw, "")


def _assert_subtree(small, big, where):
    if isinstance(small, dict):
        assert isinstance(big, dict), where
        for key, value in small.items():
            assert key in big, f"{where}.{key} is dumped but was not written"
            _assert_subtree(value, big[key], f"{where}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(big) == len(small), where
        for i, (a, b) in enumerate(zip(small, big)):
            _assert_subtree(a, b, f"{where}[{i}]")
    else:
        assert small == big, (where, small, big)


@pytest.mark.parametrize("path", ZOO, ids=ZOO_IDS)
def test_zoo_name_matches_file(path):
    assert load_spec(path).name == path.stem


def test_zoo_names_unique_and_all_load():
    names = attndsl.zoo_names()
    assert len(names) == len(set(names)) == len(ZOO) >= 20
    for name in names:
        assert attndsl.zoo_path(name).stem == name


# ================================================================ hoisting
def test_single_branch_dumps_without_branches():
    spec = load_spec("swin_wmsa")
    assert spec.single_branch and len(spec.branches) == 1
    assert spec.branches[0].name == m.DEFAULT_BRANCH
    data = yaml.safe_load(dump_spec(spec))
    assert "branches" not in data
    assert data["application"] == {"kind": "window", "size": 7, "padding": "pad_unmasked",
                                   "shrink_to_map": True}
    assert data["parameterization"]["terms"] == ["query_key", "rel_pos_bias"]
    for key in ("name", "heads"):          # the branch's own name/heads are not hoisted
        assert data[key] == {"name": "swin_wmsa", "heads": 3}[key]


def test_multi_branch_dumps_with_branches():
    spec = load_spec("hilo")
    assert not spec.single_branch
    data = yaml.safe_load(dump_spec(spec))
    assert [b["name"] for b in data["branches"]] == ["hifi", "lofi"]
    assert data["branches"][1]["heads"] == {"fraction": 0.9}
    assert data["branches"][1]["application"] == {"kind": "pooled", "ratio": 2}
    for axis in m.BRANCH_AXES:
        assert axis not in data
    assert "merge" not in data             # {kind: concat, out: false} is the default


BODY = """\
    parameterization: {kind: additive, terms: [query_key]}
    normalization: {kind: softmax}
    application: {kind: global}
"""


def test_explicit_single_default_branch_equals_hoisted_form():
    hoisted = load_spec("name: demo\nheads: 2\n" + textwrap.dedent(BODY))
    explicit = load_spec("name: demo\nheads: 2\nbranches:\n  - name: attn\n    heads: rest\n"
                         + textwrap.indent(textwrap.dedent(BODY), "    "))
    assert explicit == hoisted
    assert "branches" not in yaml.safe_load(dump_spec(explicit))


def test_single_named_branch_keeps_branches():
    spec = load_spec("name: demo\nheads: 2\nbranches:\n  - name: only\n"
                     + textwrap.indent(textwrap.dedent(BODY), "    "))
    assert not spec.single_branch
    data = yaml.safe_load(dump_spec(spec))
    assert data["branches"][0]["name"] == "only"
    assert load_spec(dump_spec(spec)) == spec


def test_dump_keeps_kind_tags_even_when_default():
    spec = load_spec("name: demo\n" + textwrap.dedent(BODY))
    data = yaml.safe_load(dump_spec(spec))
    assert data == {"name": "demo", "parameterization": {"kind": "additive",
                                                         "terms": ["query_key"]},
                    "normalization": {"kind": "softmax"}, "application": {"kind": "global"}}


def test_dump_float_formats_round_trip():
    text = ("name: demo\n" + textwrap.dedent(BODY).replace(
        "{kind: softmax}", "{kind: softmax, temperature: 1.0e-05}")
        .replace("[query_key]}", "[query_key], scale: 2.5e+5}"))
    spec = load_spec(text)
    assert load_spec(dump_spec(spec)) == spec
    assert spec.branches[0].normalization.temperature == 1e-5
    assert math.isclose(spec.branches[0].parameterization.scale, 2.5e5)


def test_dump_quotes_awkward_strings():
    for desc in ["yes", "null", "1.5", "a: b", "# not a comment", "- item", "'quoted'",
                 "multi\nline", "ünïcode · ≤", ""]:
        spec = load_spec({"name": "demo", "description": desc,
                          **yaml.safe_load(textwrap.dedent(BODY))})
        again = load_spec(dump_spec(spec))
        assert again.description == desc and again == spec


# ================================================================ sources
def test_load_spec_sources_agree(tmp_path, monkeypatch):
    path = attndsl.zoo_path("swin_wmsa")
    text = path.read_text()
    by_path = load_spec(path)
    copy = tmp_path / "copy.yml"
    copy.write_text(text)
    monkeypatch.chdir(tmp_path)
    same = [
        load_spec(str(path)),           # a path as a string
        load_spec("swin_wmsa"),         # a zoo name
        load_spec(text),                # YAML text
        load_spec(yaml.safe_load(text)),  # a dict
        load_spec("copy.yml"),          # a relative .yml path
        load_spec(copy),
        load_spec(by_path),             # a Spec passes through
    ]
    for spec in same:
        assert spec == by_path
    assert load_spec(by_path) is by_path


def test_dict_input_is_not_mutated():
    data = yaml.safe_load(attndsl.zoo_path("swin_wmsa").read_text())
    before = json.dumps(data, sort_keys=True)
    load_spec(data)
    assert json.dumps(data, sort_keys=True) == before


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    for source in (missing, str(missing)):
        with pytest.raises(SpecError) as info:
            load_spec(source)
        assert str(missing) in str(info.value)
        assert "not found" in str(info.value)


def test_missing_file_with_zoo_name_hints_zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        load_spec("swin_wmsa.yaml")
    assert "swin_wmsa.yaml" in str(info.value)
    assert str(attndsl.zoo_path("swin_wmsa")) in str(info.value)     # "the zoo has ..."


def test_unsupported_source_type():
    with pytest.raises(SpecError) as info:
        load_spec(42)
    assert "int" in str(info.value) and "path" in str(info.value)


def test_error_from_path_carries_source(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nheads: 3\nfoo: 1\n" + textwrap.dedent(BODY))
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert info.value.source == str(bad) and info.value.line == 3
    assert str(info.value).startswith(f"{bad}:3 at 'foo': unknown key 'foo'")


def test_specs_are_frozen_and_hashable():
    spec = load_spec("hilo")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    assert hash(spec) == hash(load_spec(dump_spec(spec)))


# ================================================================ CLI: schema and zoo
@pytest.fixture(scope="module")
def schema():
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["schema"]) == 0
    return json.loads(buf.getvalue())


def test_schema_cli_prints_json(capsys):
    assert cli_main(["schema"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["title"] == "Spec" and data["type"] == "object"


def _registered_kinds():
    from attndsl.applications import KINDS
    return set(KINDS)


UNIONS = {
    "parameterization": {"additive", "hadamard"},
    "normalization": {"softmax", "identity", "relu", "layernorm", "sigmoid", "l1",
                      "filter_norm", "sum", "talking_heads", "gated_positional"},
    # every module of attndsl/applications/ (at least the first six)
    "application": _registered_kinds(),
}


def test_schema_has_discriminated_unions(schema):
    assert {"global", "window", "sliding", "pooled", "soft_select", "clusters", "grid",
            "axial", "stripes"} <= UNIONS["application"]
    defs = schema["$defs"]
    branch = defs["Branch"]["properties"]
    for axis, kinds in UNIONS.items():
        disc = branch[axis]["discriminator"]
        assert disc["propertyName"] == "kind"
        assert set(disc["mapping"]) == kinds
        for kind, ref in disc["mapping"].items():
            target = _resolve(schema, ref)
            assert target["properties"]["kind"]["const"] == kind
            assert target["additionalProperties"] is False     # unknown keys are errors
        assert {o["$ref"] for o in branch[axis]["oneOf"]} == set(disc["mapping"].values())
    positional = schema["properties"]["positional"]["items"]["discriminator"]
    assert set(positional["mapping"]) == {"peg"}


def test_schema_structure(schema):
    assert schema["required"] == ["name"]
    # either `branches`, or the hoisted single branch's axes at the top level
    assert {tuple(o["required"]) for o in schema["oneOf"]} == {
        ("branches",), ("parameterization", "normalization", "application")}
    for axis in m.BRANCH_AXES:
        assert axis in schema["properties"]
    assert schema["properties"]["name"]["pattern"] == r"^[a-z][a-z0-9_]*$"
    defs = schema["$defs"]
    for name, d in defs.items():                      # every component forbids extra keys
        assert d.get("additionalProperties") is False, name
    for ref in _refs(schema):                         # and every $ref resolves
        _resolve(schema, ref)
    window = defs["Window"]["properties"]
    # one integer or [rows, columns], each ≥ 1
    one, pair = window["size"]["anyOf"]
    assert one["minimum"] == 1 and all(item["minimum"] == 1 for item in pair["prefixItems"])
    assert set(window["padding"]["enum"]) == {"error", "pad_unmasked", "pad_masked"}
    assert defs["Dropout"]["properties"]["attention"]["exclusiveMaximum"] == 1
    assert defs["GhostHead"]["properties"]["lam"]["type"] == "integer"
    assert defs["Softmax"]["properties"]["temperature"]["minimum"] == 1e-6


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _resolve(schema, ref):
    assert ref.startswith("#/$defs/"), ref
    return schema["$defs"][ref.split("/")[-1]]


def _schema_errors(schema, sub, value, where="") -> list[str]:
    """A small JSON-Schema checker, just for the keywords `attndsl schema` emits ($ref,
    anyOf, oneOf + discriminator, not, type, const, enum, pattern, bounds, items, minItems,
    properties, required, additionalProperties)."""
    if "$ref" in sub:
        return _schema_errors(schema, _resolve(schema, sub["$ref"]), value, where)
    errs: list[str] = []
    if "anyOf" in sub:
        if all(_schema_errors(schema, s, value, where) for s in sub["anyOf"]):
            errs.append(f"{where}: no anyOf option matches")
    if "discriminator" in sub and isinstance(value, dict):
        disc = sub["discriminator"]
        tag = value.get(disc["propertyName"])
        if tag not in disc["mapping"]:
            return errs + [f"{where}: oneOf: unknown {disc['propertyName']} {tag!r}"]
        errs += _schema_errors(schema, {"$ref": disc["mapping"][tag]}, value, where)
    elif "oneOf" in sub:
        ok = sum(not _schema_errors(schema, s, value, where) for s in sub["oneOf"])
        if ok != 1:
            errs.append(f"{where}: {ok} oneOf options match")
    if "not" in sub and not _schema_errors(schema, sub["not"], value, where):
        errs.append(f"{where}: matches a 'not' schema")
    kind = sub.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool,
             "null": type(None)}
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return errs + [f"{where}: not an integer"]
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return errs + [f"{where}: not a number"]
    elif kind and not isinstance(value, types[kind]):
        return errs + [f"{where}: not {kind}"]
    if "const" in sub and value != sub["const"]:
        errs.append(f"{where}: != {sub['const']!r}")
    if "enum" in sub and value not in sub["enum"]:
        errs.append(f"{where}: not in {sub['enum']}")
    if isinstance(value, str) and "pattern" in sub and not re.search(sub["pattern"], value):
        errs.append(f"{where}: does not match {sub['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in sub and value < sub["minimum"]:
            errs.append(f"{where}: < {sub['minimum']}")
        if "maximum" in sub and value > sub["maximum"]:
            errs.append(f"{where}: > {sub['maximum']}")
        if "exclusiveMinimum" in sub and value <= sub["exclusiveMinimum"]:
            errs.append(f"{where}: <= {sub['exclusiveMinimum']}")
        if "exclusiveMaximum" in sub and value >= sub["exclusiveMaximum"]:
            errs.append(f"{where}: >= {sub['exclusiveMaximum']}")
    if isinstance(value, list):
        if len(value) < sub.get("minItems", 0):
            errs.append(f"{where}: fewer than {sub['minItems']} items")
        for i, item in enumerate(value):
            errs += _schema_errors(schema, sub.get("items", {}), item, f"{where}[{i}]")
    if isinstance(value, dict):
        props = sub.get("properties", {})
        for key in sub.get("required", []):
            if key not in value:
                errs.append(f"{where}: missing {key}")
        for key, item in value.items():
            if key in props:
                errs += _schema_errors(schema, props[key], item, f"{where}.{key}")
            elif sub.get("additionalProperties") is False:
                errs.append(f"{where}: unknown key {key}")
    return errs


@pytest.mark.parametrize("path", ZOO, ids=ZOO_IDS)
def test_schema_accepts_every_zoo_spec_in_branches_form(schema, path):
    data = load_spec(path).model_dump(mode="json")
    assert _schema_errors(schema, schema, data) == []


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["branches"][0]["application"].update(kind="windw"), "oneOf"),
    (lambda d: d["branches"][0]["application"].update(size=0), "no anyOf option"),   # int ≥ 1 or a pair
    (lambda d: d["branches"][0]["projections"].update(layot="qkv"), "unknown key layot"),
    (lambda d: d.update(name="Bad"), "does not match"),
    (lambda d: d.pop("branches"), "0 oneOf options match"),
], ids=["unknown-kind", "size-zero", "unknown-key", "bad-name", "no-branches"])
def test_schema_rejects_what_load_spec_rejects(schema, edit, needle):
    data = load_spec("swin_wmsa").model_dump(mode="json")
    edit(data)
    with pytest.raises(SpecError):
        load_spec(data)
    assert any(needle in e for e in _schema_errors(schema, schema, data))


@pytest.mark.parametrize("path", ZOO, ids=ZOO_IDS)
def test_schema_accepts_zoo_yaml_as_written(schema, path):
    """Was: the schema required 'branches' and forbade top-level axes, so it rejected every
    single-branch spec written the documented hoisted way (all of the zoo but hilo)."""
    raw = yaml.safe_load(path.read_text())
    assert _schema_errors(schema, schema, raw) == []


def test_schema_rejects_axes_beside_branches(schema):
    raw = yaml.safe_load(attndsl.zoo_path("hilo").read_text())
    raw["application"] = {"kind": "global"}
    with pytest.raises(SpecError):
        load_spec(raw)
    assert _schema_errors(schema, schema, raw)


def test_cli_zoo_json_lists_every_spec(capsys):
    assert cli_main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == attndsl.zoo_names()
    assert all(Path(r["path"]).exists() for r in rows)


def test_a_spec_pickled_under_the_old_package_name_still_loads():
    """The language package was attndsl.spec; a model pickled then names that path."""
    import pickle

    import attndsl
    spec = attndsl.load_spec("nat")
    old = pickle.dumps(spec).replace(b"attndsl.lang.models", b"attndsl.spec.models")
    assert b"attndsl.spec.models" in old
    assert pickle.loads(old) == spec
