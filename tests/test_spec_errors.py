"""Every way a spec can be wrong gives one `SpecError` that names the field, the YAML line
(when the loader can know it), the bad value and what would be valid.

Load-time cases are YAML texts (so the line is known); bind-time cases load a valid spec and
then call `attndsl.bind(...)`, whose errors carry the field path but no line (a `Spec` does not
remember where its fields were written).

Near the bottom: regressions for bugs and poor messages found while writing this file (since
fixed).
"""
from __future__ import annotations

import textwrap

import pytest
import yaml

import attndsl
from attndsl import SpecError, bind, load_spec
from attndsl.cli import main as cli_main


def _y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def edit(text: str, old: str, new: str) -> str:
    """Replace `old` by `new`, asserting `old` occurs exactly once (so a case cannot silently
    stop testing what it says)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def zoo_text(name: str) -> str:
    return attndsl.zoo_path(name).read_text()


# A valid single-branch spec in block style, so every field has its own line.
BASE = _y("""
    name: demo
    heads: 3
    projections:
      layout: qkv
    parameterization:
      kind: additive
      terms: [query_key]
    normalization:
      kind: softmax
    application:
      kind: window
      size: 7
    """)
#   1 name / 2 heads / 3 projections / 4 layout / 5 parameterization / 6 kind / 7 terms /
#   8 normalization / 9 kind / 10 application / 11 kind / 12 size

# A valid two-branch spec (HiLo-like).
MULTI = _y("""
    name: demo_two
    heads: 4
    branches:
      - name: local
        heads: rest
        parameterization: {kind: additive, terms: [query_key]}
        normalization: {kind: softmax}
        application: {kind: window, size: 2}
      - name: coarse
        heads: 2
        projections: {layout: q_kv}
        parameterization: {kind: additive, terms: [query_key]}
        normalization: {kind: softmax}
        application: {kind: pooled, ratio: 2}
    """)
#   1 name / 2 heads / 3 branches / 4 - name local / 5 heads / 6 parameterization /
#   7 normalization / 8 application / 9 - name coarse / 10 heads / 11 projections /
#   12 parameterization / 13 normalization / 14 application

ELSA = zoo_text("elsa")            # ... line 14: "  expand: {kind: ghost_head, lam: 0, ...}"
HILO = zoo_text("hilo")


def test_bases_are_valid():
    for text, res in ((BASE, (14, 14)), (MULTI, (8, 8)), (ELSA, (14, 14)), (HILO, (14, 14))):
        bind(load_spec(text), 96, res)


# ================================================================ load-time errors
# (id, yaml text, exact exc.path, exc.line or None for "don't check", substrings of str(exc))
LOAD_CASES = [
    # -- YAML itself
    ("yaml-syntax-bad-indent", "name: demo\nheads: 3\n  bad: indent\n", "", 3,
     ["invalid YAML", "mapping values are not allowed"]),
    ("yaml-syntax-unclosed-flow", "name: demo\nheads: [3\nnormalization: 1\n", "", None,
     ["invalid YAML"]),
    ("yaml-tab-indent", "name: demo\n\theads: 3\n", "", 2, ["invalid YAML", "\\t"]),
    ("yaml-unhashable-key", "name: demo\n? [a, b]\n: 1\n", "", 2,
     ["invalid YAML", "unhashable key"]),
    ("yaml-unsafe-tag", "name: !!python/object:os.system {}\n", "", 1, ["invalid YAML"]),
    ("top-level-list", "- name: demo\n- heads: 3\n", "", 1,
     ["must be a YAML mapping", "got list"]),
    ("top-level-scalar", "just some words\n", "", 1, ["must be a YAML mapping", "got str"]),
    ("top-level-empty", "# nothing but a comment\n", "", 1, ["must be a YAML mapping"]),
    # -- name
    ("missing-name", edit(BASE, "name: demo\n", ""), "name", 1,
     ["missing required key 'name'"]),
    ("bad-name-pattern", edit(BASE, "name: demo", "name: Demo-1"), "name", 1,
     ["'Demo-1'", "^[a-z][a-z0-9_]*$"]),
    ("name-not-a-string", edit(BASE, "name: demo", "name: 5"), "name", 1,
     ["valid string", "got 5"]),
    # -- unknown keys
    ("unknown-top-key-normalisation", BASE + "normalisation: {kind: softmax}\n",
     "normalisation", 13,
     ["unknown key 'normalisation'", "did you mean 'normalization'?", "valid keys here:",
      "parameterization"]),
    ("unknown-top-key-head", edit(BASE, "heads: 3", "head: 3"), "head", 2,
     ["unknown key 'head'", "did you mean 'heads'?"]),
    ("unknown-key-in-application", edit(BASE, "  size: 7", "  size: 7\n  sise: 3"),
     "application.sise", 13,
     ["unknown key 'sise'", "did you mean 'size'?", "shift", "padding", "shrink_to_map"]),
    ("unknown-key-in-projections", edit(BASE, "  layout: qkv", "  layot: qkv"),
     "projections.layot", 4,
     ["unknown key 'layot'", "did you mean 'layout'?", "qk_width", "out_bias"]),
    ("unknown-key-in-ghost-head",
     edit(ELSA, "lam: 0,", "lambda: 0,"), "kernel.expand.lambda", 14,
     ["unknown key 'lambda'", "did you mean 'lam'?", "gamma"]),
    ("unknown-key-in-branch", edit(MULTI, "heads: 2\n", "heads: 2\n    window: 2\n"),
     "branches[1].window", 11,
     ["unknown key 'window'", "valid keys here:", "application"]),
    # -- tagged unions
    ("unknown-kind-parameterization", edit(BASE, "kind: additive", "kind: multiplicative"),
     "parameterization", 5,
     ["unknown kind 'multiplicative'", "'additive'", "'hadamard'"]),
    ("unknown-kind-normalization", edit(BASE, "kind: softmax", "kind: softmin"),
     "normalization", 8,
     ["unknown kind 'softmin'", "'softmax'", "'layernorm'", "'filter_norm'"]),
    ("unknown-kind-application", edit(BASE, "kind: window", "kind: windw"), "application", 10,
     ["unknown kind 'windw'", "'window'", "'sliding'", "'pooled'", "'clusters'"]),
    ("unknown-kind-positional", BASE + "positional:\n  - {kind: cpe, size: 3}\n",
     "positional[0]", 14, ["unknown kind 'cpe'", "'peg'"]),
    ("unknown-kind-in-branch", edit(MULTI, "{kind: pooled, ratio: 2}", "{kind: pool, ratio: 2}"),
     "branches[1].application", 14, ["unknown kind 'pool'", "'pooled'"]),
    ("kind-of-wrong-type", edit(BASE, "kind: window", "kind: 7"), "application", 10,
     ["unknown kind '7'", "'window'"]),
    ("missing-kind-application", edit(BASE, "  kind: window\n", ""), "application", 10,
     ["missing 'kind'"]),
    ("missing-kind-positional", BASE + "positional:\n  - {size: 3}\n", "positional[0]", 14,
     ["missing 'kind'"]),
    ("missing-application", edit(BASE, "application:\n  kind: window\n  size: 7\n", ""),
     "application", None, ["missing required key 'application'"]),
    # -- wrong types
    ("string-for-int", edit(BASE, "size: 7", "size: seven"), "application.size", 12,
     ["valid integer", "'seven'"]),
    ("list-for-mapping", edit(BASE, "projections:\n  layout: qkv", "projections: [qkv]"),
     "projections", 3, ["valid dictionary", "['qkv']"]),
    ("scalar-for-tagged-mapping",
     edit(BASE, "application:\n  kind: window\n  size: 7", "application: window"),
     "application", 10, ["valid dictionary", "'window'"]),
    ("string-for-terms-list", edit(BASE, "terms: [query_key]", "terms: query_key"),
     "parameterization.terms", 7, ["'query_key'"]),
    ("int-for-nested-model", edit(ELSA, "expand: {kind: ghost_head, lam: 0, gamma: 1.0}",
                                  "expand: 5"),
     "kernel.expand", 14, ["valid dictionary", "GhostHead", "got 5"]),
    ("bad-literal-padding", edit(BASE, "size: 7", "size: 7\n  padding: zero"),
     "application.padding", 13, ["'error'", "'pad_unmasked'", "'pad_masked'", "'zero'"]),
    ("bad-literal-term", edit(BASE, "[query_key]", "[query_key, key_query]"),
     "parameterization.terms[1]", 7,
     ["'key_query'", "'query_key'", "'query_rel_pos'", "'rel_pos_bias'"]),
    ("bad-literal-pooled-op", edit(MULTI, "{kind: pooled, ratio: 2}",
                                   "{kind: pooled, op: max, ratio: 2}"),
     "branches[1].application.op", 14, ["'avg' or 'conv'", "'max'"]),
    ("bad-merge-kind", MULTI + "merge: {kind: sum}\n", "merge.kind", 15,
     ["'concat'", "'sum'"]),
    ("spec-heads-fractional", edit(BASE, "heads: 3", "heads: 2.5"), "heads", 2,
     ["fractional part", "got 2.5"]),
    ("spec-heads-word", edit(BASE, "heads: 3", "heads: all"), "heads", 2,
     ["'channels'", "'all'"]),
    # -- out of range
    ("size-zero", edit(BASE, "size: 7", "size: 0"), "application.size", 12,
     ["greater than or equal to 1", "got 0"]),
    ("negative-shift", edit(BASE, "size: 7", "size: 7\n  shift: -1"), "application.shift", 13,
     ["greater than or equal to 0", "got -1"]),
    ("dropout-one", BASE + "dropout: {attention: 1.0}\n", "dropout.attention", 13,
     ["less than 1", "got 1.0"]),
    ("temperature-zero", edit(BASE, "kind: softmax", "kind: softmax\n  temperature: 0"),
     "normalization.temperature", 10, ["greater than or equal to 0.000001", "got 0"]),
    ("spec-heads-zero", edit(BASE, "heads: 3", "heads: 0"), "heads", 2,
     ["heads must be >= 1 or 'channels'", "got 0"]),
    ("pad-to-multiple-zero", BASE + "pad_to_multiple: 0\n", "pad_to_multiple", 13,
     ["greater than or equal to 1", "got 0"]),
    ("cluster-size-one", edit(zoo_text("boat_fsla"), "size: 49,", "size: 1,"),
     "application.size", 8, ["greater than or equal to 2", "got 1"]),
    ("nan-scale", edit(BASE, "terms: [query_key]", "terms: [query_key]\n  scale: .nan"),
     "parameterization.scale", 8, ["finite number", "got nan"]),
    ("nan-filter-gain", edit(BASE, "kind: softmax", "kind: filter_norm\n  gain: .nan"),
     "normalization.gain", 10, ["finite number", "got nan"]),
    ("nan-ghost-gamma", edit(ELSA, "gamma: 1.0", "gamma: .nan"), "kernel.expand.gamma", 14,
     ["finite number", "got nan"]),
    ("inf-temperature", edit(BASE, "kind: softmax", "kind: softmax\n  temperature: .inf"),
     "normalization.temperature", 10, ["finite number", "got inf"]),
    ("ghost-lam-negative", edit(ELSA, "lam: 0,", "lam: -1,"), "kernel.expand.lam", 14,
     ["greater than or equal to 0", "got -1"]),
    # -- terms
    ("duplicated-terms", edit(BASE, "[query_key]", "[query_key, rel_pos_bias, query_key]"),
     "parameterization.terms", 7, ["listed more than once", "query_key"]),
    ("empty-terms", edit(BASE, "[query_key]", "[]"), "parameterization.terms", 7,
     ["at least 1 item", "got []"]),
    # -- ghost head lam
    ("ghost-lam-fractional", edit(ELSA, "lam: 0,", "lam: 0.5,"), "kernel.expand.lam", 14,
     ["lam must be an integer", "got 0.5", "non-negative integer", "NaN"]),
    # -- branches
    ("duplicate-branch-names", edit(MULTI, "name: coarse", "name: local"), "branches*", None,
     ["branch names must be unique", "'local'"]),
    ("reserved-branch-name", edit(MULTI, "name: coarse", "name: merge"), "branches*", None,
     ["reserved", "'merge'"]),
    ("negative-branch-heads", edit(MULTI, "heads: 2\n", "heads: -2\n"), "branches[1].heads",
     10, ["greater than or equal to 0", "-2"]),
    ("axes-at-top-level-with-branches", MULTI + "application: {kind: global}\n",
     "application", 15,
     ["unknown key 'application'", "writes the axes inside each branch", "branches"]),
    ("bad-branch-name", edit(MULTI, "name: coarse", "name: Coarse"), "branches[1].name", 9,
     ["'Coarse'", "^[a-z][a-z0-9_]*$"]),
    ("branch-heads-word", edit(MULTI, "heads: rest", "heads: many"), "branches[0].heads", 5,
     ["'rest'", "'many'"]),
    ("empty-branches", _y("""
        name: demo
        branches: []
        """), "branches", 2, ["at least 1 item", "got []"]),
    ("branches-not-a-list", _y("""
        name: demo
        branches: {name: a}
        """), "branches", 2, ["got {'name': 'a'}"]),
]


@pytest.mark.parametrize("text,path,line,needles",
                         [pytest.param(*c[1:], id=c[0]) for c in LOAD_CASES])
def test_load_error(text, path, line, needles):
    with pytest.raises(SpecError) as info:
        load_spec(text)
    exc = info.value
    message = str(exc)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    if path is not None and path.endswith("*"):
        assert exc.path.startswith(path[:-1]), message
    elif path is not None:
        assert exc.path == path, message
        if path:
            assert f"'{path}'" in message
    if line is not None:
        assert exc.line == line, message
        assert f"line {line}" in message
    assert exc.detail and exc.detail in message
    assert "Traceback" not in message


def test_load_case_ids_distinct():
    ids = [c[0] for c in LOAD_CASES]
    texts = [c[1] for c in LOAD_CASES]
    assert len(set(ids)) == len(ids)
    assert len(set(texts)) == len(texts)


def test_error_from_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(BASE, "size: 7", "size: 0"))
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert info.value.source == str(bad)
    assert str(info.value).startswith(f"{bad}:12 at 'application.size':")


def test_dict_input_has_path_but_no_line():
    data = yaml.safe_load(edit(BASE, "size: 7", "size: 0"))
    with pytest.raises(SpecError) as info:
        load_spec(data)
    assert info.value.path == "application.size"
    assert info.value.line is None


def test_several_problems_are_all_listed():
    text = edit(edit(BASE, "size: 7", "size: 0"), "kind: softmax", "kind: softmax\n  temp: 2")
    with pytest.raises(SpecError) as info:
        load_spec(text)
    message = str(info.value)
    assert "2 problems" in message
    assert "'normalization.temp'" in message and "line 10" in message
    assert "'application.size'" in message and "line 13" in message
    assert info.value.path == "normalization.temp"   # the first one


# ================================================================ bind-time errors
# (id, spec text, bind args, exact exc.path, substrings)
BIND_CASES = [
    ("dim-not-divisible-by-heads", "swin_wmsa", (100, (14, 14)), "heads",
     ["dim 100 is not divisible by heads 3", "[1, 2, 4, 5, 10, 20, 25, 50]", "'channels'"]),
    ("heads-override-not-dividing", "swin_wmsa", (96, (14, 14), 7), "heads",
     ["dim 96 is not divisible by heads 7", "[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]"]),
    ("dim-zero", "vit_mhsa", (0, (14, 14)), "dim", ["positive", "got 0"]),
    ("resolution-not-pair", "vit_mhsa", (96, (1, 2, 3)), "resolution", ["(H, W)"]),
    ("resolution-zero", "vit_mhsa", (96, (0, 14)), "resolution", ["positive", "(0, 14)"]),
    ("branch-heads-add-up-wrong", edit(MULTI, "heads: rest", "heads: 1"), (96, (8, 8)),
     "branches", ["[1, 2] add up to 3", "spec has 4 heads", "heads: rest"]),
    ("branch-heads-exceed-with-rest", edit(MULTI, "heads: 2\n", "heads: 5\n"), (96, (8, 8)),
     "branches", ["add up to 5", "more than the spec's 4 heads"]),
    ("two-rest-branches", edit(MULTI, "heads: 2\n", "heads: rest\n"), (96, (8, 8)),
     "branches[1].heads", ["only one branch", "'rest'", "['local', 'coarse']"]),
    ("window-not-dividing-grid", BASE, (96, (15, 14)), "application.padding",
     ["window 7 does not divide the 15x14 grid", "'error'", "'pad_unmasked'", "'pad_masked'"]),
    ("shift-equal-window", edit(BASE, "size: 7", "size: 7\n  shift: 7"), (96, (14, 14)),
     "application.shift", ["shift 7 must be smaller than the window 7"]),
    ("pad-masked-non-softmax",
     edit(zoo_text("twins_lsa_masked"), "{kind: softmax}", "{kind: identity}"), (96, (15, 15)),
     "application.padding", ["'pad_masked'", "softmax", "got 'identity'", "'pad_unmasked'"]),
    ("sliding-even-size", edit(zoo_text("nat"), "size: 7", "size: 6"), (96, (14, 14)),
     "application.size", ["odd", "got 6"]),
    ("natten-clamp-bigger-than-grid", "nat", (96, (5, 14)), "application.size",
     ["neighbourhood 7", "5x14 grid", "smallest has 5", "'zero_pad'"]),
    ("dilated-clamp-bigger-than-subgrid", "dinat", (96, (13, 14)), "application.size",
     ["dilation 2", "13x14", "smallest has 6"]),
    ("cluster-size-vs-tokens", "boat_fsla", (96, (10, 10)), "application.size",
     ["N = size·2^L", "N=100", "cluster size 49", "[49, 98, 196, 392, 784, 1568]",
      "pad_to_multiple"]),
    ("cluster-fewer-tokens-than-size", "boat_fsla", (96, (5, 5)), "application.size",
     ["N=25", "valid N"]),
    ("overlap-exceeds-cluster",
     edit(zoo_text("boat_fsla"), "overlap: 20", "overlap: 50"), (96, (14, 14)),
     "application.overlap", ["overlap 50 exceeds the cluster size 49"]),
    ("layout-missing-v", edit(BASE, "layout: qkv", "layout: qk"), (96, (14, 14)),
     "projections.layout", ["needs ['v']", "'qk'", "valid layouts here: ['qkv', 'q_kv']"]),
    ("layout-missing-k-v", edit(BASE, "layout: qkv", "layout: q"), (96, (14, 14)),
     "projections.layout", ["needs ['k', 'v']", "'q'", "['qkv', 'q_kv']"]),
    ("layout-unused-k", edit(zoo_text("dynamic_dwconv"), "layout: q,", "layout: qk,"),
     (96, (14, 14)), "projections.layout", ["never reads ['k']", "'qk'", "['q']"]),
    ("layout-unused-q-static-filter",
     edit(zoo_text("dwconv"), "layout: none", "layout: q"), (96, (14, 14)),
     "projections.layout", ["never reads ['q']", "['none']"]),
    ("values-input-with-v-layout",
     edit(zoo_text("dynamic_dwconv"), "layout: q,", "layout: qkv,"), (96, (14, 14)),
     "projections.layout", ["values is 'input'", "'qkv' also makes v"]),
    ("pooled-without-q-kv", edit(MULTI, "{layout: q_kv}", "{layout: qkv}"), (96, (8, 8)),
     "branches[1].projections.layout", ["pooled", "must be 'q_kv'", "got 'qkv'"]),
    ("avg-pool-with-norm", edit(MULTI, "ratio: 2}", "ratio: 2, norm: layernorm}"),
     (96, (8, 8)), "branches[1].application.norm", ["op 'avg'", "norm 'none'"]),
    ("rel-pos-with-pooled",
     edit(MULTI, "[query_key]}\n    normalization: {kind: softmax}\n    application: {kind: pooled",
          "[query_key, rel_pos_bias]}\n    normalization: {kind: softmax}\n"
          "    application: {kind: pooled"), (96, (8, 8)),
     "branches[1].parameterization.terms",
     ["relative-position", "'pooled'", "valid applications:", "global", "window"]),
    ("rel-pos-with-clusters",
     edit(zoo_text("boat_fsla"), "[query_key]", "[query_key, query_rel_pos]"), (96, (14, 14)),
     "parameterization.terms", ["'clusters'", "valid applications:", "sliding"]),
    ("static-bank-without-query-key",
     edit(edit(zoo_text("dynconv_static_bank"), "[query_key]", "[rel_pos_bias]"),
          "layout: qv", "layout: v"), (96, (14, 14)),
     "kernel_bank.keys", ["static key bank", "'query_key'", "missing"]),
    ("static-bank-with-query-rel-pos",
     edit(zoo_text("dynconv_static_bank"), "[query_key]", "[query_key, query_rel_pos]"),
     (96, (14, 14)), "parameterization.terms", ["drop 'query_rel_pos'"]),
    ("query-mean-without-depthwise",
     edit(zoo_text("dynconv_depthwise"), "kernel: {type: depthwise}\n", ""), (96, (14, 14)),
     "kernel.type", ["'query_mean'", "'depthwise'"]),
    ("hadamard-with-window",
     edit(ELSA, "{kind: sliding, size: 7, border: zero_pad}", "{kind: window, size: 7}"),
     (96, (14, 14)), "application",
     ["hadamard", "{kind: sliding, border: zero_pad, dilation: 1}"]),
    ("hadamard-depthwise-without-ghost",
     edit(ELSA, "  expand: {kind: ghost_head, lam: 0, gamma: 1.0}\n", ""), (96, (14, 14)),
     "kernel.expand", ["depthwise", "kernel.expand: {kind: ghost_head}"]),
    ("hadamard-even-dw-kernel",
     edit(ELSA, "group_width: 8,", "group_width: 8, dw_kernel: 4,"), (96, (14, 14)),
     "parameterization.dw_kernel", ["odd"]),
    ("ghost-head-with-standard-kernel", edit(ELSA, "type: depthwise", "type: standard"),
     (96, (14, 14)), "kernel.type", ["ghost head", "'depthwise'"]),
    ("kernel-size-without-query-key", zoo_text("dwconv") + "kernel: {size: 3}\n",
     (96, (14, 14)), "kernel.size", ["'query_key'", "dynamic keys"]),
    ("kernel-size-even", edit(zoo_text("dynconv_kernel3"), "size: 3}", "size: 4}"),
     (96, (14, 14)), "kernel.size", ["odd", "got 4"]),
    ("residual-on-narrow-branch",
     edit(MULTI, "application: {kind: window, size: 2}",
          "application: {kind: window, size: 2}\n    extras: {residual: true}"), (96, (8, 8)),
     "branches[0].extras.residual", ["all 96 channels", "it has 48"]),
    ("pooling-ratio-larger-than-grid", "twins_gsa", (96, (7, 7)), "application.ratio",
     ["ratio 8", "7x7 grid", "valid: 1..7"]),
    ("qk-width-not-multiple-of-group-width",
     edit(ELSA, "group_width: 8,", "group_width: 5,"), (96, (14, 14)),
     "parameterization.group_width", ["q/k width 64", "group_width 5"]),
    ("qk-width-not-divisible-by-heads",
     edit(zoo_text("vit_mhsa"), "bias: true}", "bias: true, qk_width: {num: 1, den: 3}}"),
     (96, (14, 14)), "projections.qk_width", ["q/k width 32", "6 heads"]),
    ("peg-even-size", BASE + "positional:\n  - {kind: peg, size: 4}\n", (96, (14, 14)),
     "positional[0].size", ["odd", "got 4"]),
    ("value-conv-even-size",
     edit(zoo_text("boat_fsla"), "{size: 3, bias: true}", "{size: 2}"), (96, (14, 14)),
     "extras.value_conv.size", ["odd"]),
    ("value-conv-on-windows", zoo_text("swin_wmsa") + "extras: {value_conv: {size: 3}}\n",
     (96, (14, 14)), "extras.value_conv", ["'window'", "valid: clusters, global, sliding"]),
    ("filter-norm-global",
     edit(zoo_text("vit_mhsa"), "{kind: softmax}", "{kind: filter_norm}"), (96, (14, 14)),
     "normalization", ["kernel size K", "got 'global'"]),
    ("depthwise-qk-narrower-than-values",
     edit(zoo_text("unified_lsa_sliding_softmax"), "bias: true}",
          "bias: true, qk_width: {num: 1, den: 2}}") + "kernel: {type: depthwise}\n",
     (96, (14, 14)), "projections.qk_width", ["q/k width (48)", "value width (96)"]),
    ("kernel-size-keys-as-values",
     edit(zoo_text("dynconv_depthwise"), "kernel: {type: depthwise}",
          "kernel: {type: depthwise, size: 3}"), (96, (14, 14)), "kernel.size",
     ["'query_key' term"]),
    ("kernel-size-with-no-value-bank",
     edit(edit(zoo_text("dynconv_kernel3"), "layout: qkv", "layout: qk"), "kernel: {size: 3}",
          "kernel: {size: 3}\nkernel_bank: {values: keys}"), (96, (14, 14)),
     "kernel_bank.values", ["cannot serve as values", "values: projected"]),
]


@pytest.mark.parametrize("source,args,path,needles",
                         [pytest.param(*c[1:], id=c[0]) for c in BIND_CASES])
def test_bind_error(source, args, path, needles):
    spec = load_spec(source)          # the spec itself is valid ...
    with pytest.raises(SpecError) as info:
        bind(spec, *args)             # ... but not at these sizes
    exc = info.value
    message = str(exc)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert exc.path == path, message
    assert f"'{path}'" in message
    assert "Traceback" not in message


def test_bind_case_ids_distinct():
    ids = [c[0] for c in BIND_CASES]
    assert len(set(ids)) == len(ids)
    assert len(LOAD_CASES) + len(BIND_CASES) >= 34


def test_single_branch_paths_have_no_branch_prefix():
    """A hoisted single-branch spec names fields as they are written (no 'branches[0].')."""
    with pytest.raises(SpecError) as info:
        bind(load_spec(BASE), 96, (15, 14))
    assert info.value.path == "application.padding"


# ================================================================ CLI
def test_cli_validate_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(BASE, "size: 7", "size: 0"))
    assert cli_main(["validate", str(bad)]) == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    assert f"{bad}:12" in captured.err
    assert "'application.size'" in captured.err
    assert "greater than or equal to 1; got 0" in captured.err


def test_cli_validate_good_and_bad(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nheads: 3\n  bad: indent\n")
    assert cli_main(["validate", "swin_wmsa", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "ok" in captured.out and "swin_wmsa" in captured.out
    assert "invalid YAML" in captured.err and "Traceback" not in captured.err


def test_cli_validate_ok(capsys):
    assert cli_main(["validate", "swin_wmsa", "hilo", "--dim", "96", "--resolution", "14",
                     "14"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_cli_validate_bind_error(capsys):
    assert cli_main(["validate", "swin_wmsa", "--dim", "100"]) == 2
    captured = capsys.readouterr()
    assert "dim 100 is not divisible by heads 3" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_cli_show_indivisible_dim(capsys):
    assert cli_main(["show", "swin_wmsa", "--dim", "100", "--resolution", "14", "14"]) == 2
    captured = capsys.readouterr()
    assert "dim 100 is not divisible by heads 3" in captured.err
    assert "[1, 2, 4, 5, 10, 20, 25, 50]" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_cli_show_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli_main(["show", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "spec file not found" in captured.err and str(missing) in captured.err
    assert "Traceback" not in captured.out + captured.err


# ================================================================ regressions
# Each of these was a bug or a poor message found while writing this file (it started as a
# strict xfail and has been fixed in attndsl since); the docstrings say what was wrong.

@pytest.mark.parametrize("text,kinds", [
    pytest.param(edit(BASE, "  kind: window\n", ""), ["'window'", "'sliding'", "'clusters'"],
                 id="application"),
    pytest.param(BASE + "positional:\n  - {size: 3}\n", ["'peg'"], id="positional"),
])
def test_missing_kind_lists_valid_kinds(text, kinds):
    """Was: "missing 'kind'; valid kinds: " with nothing after it (pydantic sets ctx
    'expected_tags' only for union_tag_invalid, not for union_tag_not_found)."""
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert "missing 'kind'" in str(info.value)
    for kind in kinds:
        assert kind in str(info.value)


@pytest.mark.parametrize("name,needle", [("local", "must be unique"), ("merge", "reserved")],
                         ids=["duplicate", "reserved"])
def test_branch_name_error_is_located_and_short(name, needle):
    """Was: path '' and the whole spec dict (paper, description, every branch) echoed."""
    with pytest.raises(SpecError) as info:
        load_spec(edit(MULTI, "name: coarse", f"name: {name}"))
    exc = info.value
    assert needle in str(exc) and f"'{name}'" in str(exc)
    assert exc.path.startswith("branches")
    assert "demo_two" not in str(exc)
    assert len(str(exc)) < 300


@pytest.mark.parametrize("text,path,value", [
    pytest.param(edit(HILO, "fraction: 0.9", "fraction: 1.5"), "branches[1].heads.fraction",
                 "1.5", id="fraction-above-1"),
    pytest.param(edit(MULTI, "heads: 2\n", "heads: -2\n"), "branches[1].heads", "-2",
                 id="negative-int"),
])
def test_branch_heads_union_error_path_and_value(text, path, value):
    """Was: 'branches[1].heads.HeadFraction.fraction' / '...heads.constrained-int' (pydantic's
    union-member names leaked into the path), 'got None' instead of the value, and an error
    for every union member."""
    with pytest.raises(SpecError) as info:
        load_spec(text)
    message = str(info.value)
    for member in ("HeadFraction", "constrained-int"):
        assert member not in message
    assert info.value.path == path
    assert "got None" not in message
    assert f"got {value}" in message


def test_negative_branch_heads_rejected():
    """Was: accepted, and bind gave the branch -2 heads and channels (0, -16)."""
    text = edit(edit(HILO, "heads: rest", "heads: -2"),
                "heads: {fraction: 0.9, rounding: floor}", "heads: rest")
    with pytest.raises(SpecError) as info:
        bind(load_spec(text), 96, (14, 14))
    assert info.value.path == "branches[0].heads"


@pytest.mark.parametrize("text", [
    pytest.param("name: demo\nfoo: &a [*a]\n", id="self-alias"),
    pytest.param("name: &a [*a]\n", id="self-alias-name"),
    pytest.param("name: demo\nfoo: " + "[" * 3000 + "]" * 3000 + "\n", id="deep-nesting"),
])
def test_recursive_yaml_is_spec_error(text):
    """Was: RecursionError from yaml.compose / io._collect_lines."""
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert "recursive" in str(info.value) or "nested" in str(info.value)


def test_directory_path_is_spec_error(tmp_path):
    """Was: IsADirectoryError from path.read_text()."""
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unknown_zoo_name_is_named():
    """Was: "a spec must be a YAML mapping ..., got str", naming neither word nor zoo."""
    with pytest.raises(SpecError) as info:
        load_spec("swin_wmsaa")
    message = str(info.value)
    assert "swin_wmsaa" in message
    assert "swin_wmsa" in message.replace("swin_wmsaa", "")     # the zoo's names


@pytest.mark.parametrize("text,path", [
    pytest.param(edit(BASE, "terms: [query_key]", "terms: [query_key]\n  scale: .nan"),
                 "parameterization.scale", id="scale"),
    pytest.param(edit(BASE, "kind: softmax", "kind: filter_norm\n  gain: .nan"),
                 "normalization.gain", id="gain"),
    pytest.param(edit(ELSA, "gamma: 1.0", "gamma: .nan"), "kernel.expand.gamma", id="gamma"),
])
def test_nan_rejected(text, path):
    """Was: accepted (pydantic allow_inf_nan defaults to True): a NaN module, and
    load(dump(s)) != s since nan != nan."""
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert info.value.path == path


def test_key_named_like_kind():
    """Was: reported at 'application.window.window' without the valid keys (io._data_path
    kept pydantic's union tag because the dict had a key of that name)."""
    with pytest.raises(SpecError) as info:
        load_spec(edit(BASE, "size: 7", "size: 7\n  window: 3"))
    assert info.value.path == "application.window"
    assert "valid keys here" in str(info.value)


def test_name_only_spec_names_missing_axes():
    """Was: "missing required key 'branches'", although a single-branch spec never writes
    branches."""
    with pytest.raises(SpecError) as info:
        load_spec("name: demo\n")
    assert "application" in str(info.value)


def test_cli_validate_bind_error_names_file(tmp_path, capsys):
    """Was: `attndsl validate a.yaml b.yaml --dim N` printed "error at 'heads': ..." without
    saying which file failed (bind-time errors carry no source)."""
    good = tmp_path / "good.yaml"
    good.write_text(zoo_text("vit_mhsa").replace("heads: 6", "heads: 4"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(zoo_text("swin_wmsa"))
    assert cli_main(["validate", str(good), str(bad), "--dim", "100"]) == 2
    err = capsys.readouterr().err
    assert "not divisible" in err
    assert str(bad) in err


@pytest.mark.parametrize("text", [
    pytest.param(edit(zoo_text("vit_mhsa"), "bias: true}",
                      "bias: true, qk_width: {num: 1, den: 200}}"), id="additive"),
    pytest.param(edit(ELSA, "num: 2, den: 3", "num: 1, den: 200"), id="hadamard"),
])
def test_zero_qk_width_rejected_at_bind(text):
    """Was: qk_width rounding the q/k width down to 0 (dim // den * num with den > dim)
    passed bind (0 % heads == 0, 0 % group_width == 0), and compile then failed with
    LoweringError (ZeroDivisionError: 0.0 cannot be raised to a negative power)."""
    with pytest.raises(SpecError) as info:
        bind(load_spec(text), 96, (14, 14))
    assert info.value.path == "projections.qk_width"
    assert "q/k width of 0" in str(info.value)


@pytest.mark.parametrize("text,key,lines", [
    pytest.param(BASE + "application: {kind: global}\n", "application", (10, 13),
                 id="axis"),
    pytest.param(edit(BASE, "  size: 7", "  size: 7\n  size: 5"), "size", (12, 13),
                 id="nested"),
    pytest.param("name: a\nname: b\n", "name", (1, 2), id="name"),
])
def test_duplicate_yaml_key_reported(text, key, lines):
    """Was: silently overwritten by the last one (PyYAML's default)."""
    with pytest.raises(SpecError) as info:
        load_spec(text)
    message = str(info.value)
    assert f"key '{key}' is written twice" in message
    assert f"lines {lines[0]} and {lines[1]}" in message
    assert info.value.line == lines[1]


# ================================================================ YAML lists, not tuples

@pytest.mark.parametrize("text,path", [
    pytest.param(edit(BASE, "terms: [query_key]", "terms: query_key"),
                 "parameterization.terms", id="terms"),
    pytest.param("name: demo\nbranches: {name: a}\n", "branches", id="branches"),
    pytest.param(BASE + "positional: {kind: peg}\n", "positional", id="positional"),
])
def test_sequence_error_says_list(text, path):
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert info.value.path == path
    assert "tuple" not in str(info.value)
    assert "list" in str(info.value)


def test_reserved_branch_names_cover_the_module_attributes():
    """A branch's parameters become an attribute of the compiled module and of the traced
    root: every public attribute of those must be a refused branch name."""
    import torch
    from attndsl.codegen.lower import GraphRoot
    from attndsl.lang.models import check_branch_name
    m = attndsl.compile("hilo", dim=48, resolution=(14, 14), backend="eager")
    from attndsl.codegen.autoplan import decide
    root = GraphRoot(m.plan, m._param_modules(), torch.float32, torch.device("cpu"), False,
                     decide(m.plan, "eager"))
    attributes = set(dir(type(m))) | set(vars(m)) | set(dir(type(root))) | set(vars(root))
    branches = {b.name for b in m.plan.branches}
    for name in sorted(a for a in attributes if not a.startswith("_") and a not in branches):
        with pytest.raises(ValueError, match="reserved|keyword"):
            check_branch_name(name)


# ================================================================ papercuts (issue #18 §5)
@pytest.mark.parametrize("old,new,bad,meant", [
    ("kind: window", "kind: windw", "windw", "window"),
    ("terms: [query_key]", "terms: [query_key, rel_pos_bais]", "rel_pos_bais", "rel_pos_bias"),
])
def test_unknown_kind_or_term_gets_did_you_mean(old, new, bad, meant):
    with pytest.raises(SpecError) as info:
        load_spec(edit(BASE, old, new))
    assert f"unknown kind '{bad}' (did you mean '{meant}'?); valid kinds:" in str(info.value)


def _directory(path):
    path.mkdir()


def _fifo(path):
    import os
    os.mkfifo(path)


def _link(target):
    return lambda path: path.symlink_to(target)


@pytest.mark.parametrize("make,says", [
    (_directory, "is a directory, not a regular file"),
    (_fifo, "is a FIFO (named pipe), not a regular file"),
    (_link("/dev/urandom"), "is a character device (a link to /dev/urandom), not a regular"),
    (_link("/nonexistent/x.yaml"), "is a broken link (to /nonexistent/x.yaml)"),
])
def test_a_spec_path_that_is_no_file_says_what_it_is(tmp_path, make, says):
    path = tmp_path / "spec.yaml"
    make(path)
    for source in (path, str(path)):
        with pytest.raises(SpecError) as info:
            load_spec(source)
        assert str(info.value) == f"spec file {path} {says}" + str(info.value).split(says)[1]
        assert "give the path of a spec YAML file" in str(info.value)


def test_a_path_without_a_yaml_suffix_says_so(tmp_path):
    plain = tmp_path / "myspec"
    plain.write_text(BASE)
    with pytest.raises(SpecError, match=r"myspec is a file without a \.yaml, \.yml or \.json "
                                        r"suffix .*rename it .*myspec\.yaml"):
        load_spec(str(plain))
    folder = tmp_path / "specs_dir"
    folder.mkdir()
    with pytest.raises(SpecError, match="specs_dir is a directory, not a spec file nor a zoo"):
        load_spec(str(folder))


def test_json_and_upper_case_suffixes_are_spec_files(tmp_path, capsys):
    """JSON is YAML: a .json spec loads, and so does SPEC.YAML / .Yml."""
    import json
    data = yaml.safe_load(BASE)
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "B.YAML").write_text(BASE)
    (tmp_path / "c.Yml").write_text(BASE)
    for name in ("a.json", "B.YAML", "c.Yml"):
        assert load_spec(str(tmp_path / name)) == load_spec(BASE)
    assert cli_main(["validate", *(str(tmp_path / n) for n in ("a.json", "B.YAML"))]) == 0
    assert capsys.readouterr().out.count("ok") == 2


def test_a_huge_qk_width_names_the_field_and_value():
    text = edit(BASE, "layout: qkv\n", "layout: qkv\n  qk_width: {num: 1000000000, den: 1}\n")
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(14, 14), backend="eager")
    assert info.value.path == "projections.qk_width" and info.value.line is not None
    assert "qk_width {num: 1000000000, den: 1} makes q and k 48,000,000,000 channels" in \
        str(info.value)


@pytest.mark.parametrize("what,load", [("search space", "attndsl.nas.space:load_space"),
                                       ("backbone", "attndsl.model.spec:load_backbone")])
def test_a_zoo_name_where_a_file_is_wanted_says_it_is_a_zoo_spec(what, load, tmp_path):
    import importlib
    module, name = load.split(":")
    fn = getattr(importlib.import_module(module), name)
    with pytest.raises(SpecError, match=f"'nat' is a zoo spec .*, not a {what} file"):
        fn("nat")
    with pytest.raises(SpecError, match=f"{what} file not found: no_such_thing"):
        fn("no_such_thing")
