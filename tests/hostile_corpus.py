"""Malformed input as a new user writes it: specs, API arguments, inputs and files.

Each case is (expect, fn): "refuse" cases must end in an attndsl error (a clear message,
no torch traceback, no hang, no out-of-memory), "accept" cases are valid edge cases that
must keep working. tests/hostile_check.py runs them in a child process with a time limit;
tests/test_hostile.py asserts the outcome of every case.
"""
from __future__ import annotations

import os
import tempfile

import torch

import attndsl

BASE = """\
name: demo
heads: 3
projections: {layout: qkv, bias: true}
parameterization: {kind: additive, terms: [query_key, rel_pos_bias]}
normalization: {kind: softmax}
application: {kind: window, size: 7}
"""


def spec_text(old: str = "", new: str = "", extra: str = "", base: str = BASE) -> str:
    text = base.replace(old, new) if old else base
    assert old == "" or old in base, old
    return text + extra


def compiled(text, dim=48, res=(14, 14), heads=None, backend="eager"):
    """Compile, then run one forward: a name or size that breaks lowering shows there."""
    def run():
        m = attndsl.compile(text, dim=dim, resolution=res, heads=heads, backend=backend)
        with torch.no_grad():
            return m(torch.randn(1, *res, dim))
    return run


def loaded(text):
    return lambda: attndsl.load_spec(text)


def api(**kwargs):
    args = dict(dim=48, resolution=(14, 14), backend="eager")
    args.update(kwargs)
    return lambda: attndsl.compile("swin_wmsa", **args)


def forward(x_fn, tokens_size=None):
    def run():
        m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), backend="eager")
        x = x_fn()
        with torch.no_grad():
            return m(x) if tokens_size is None else m.forward_tokens(x, tokens_size)
    return run


def saved_file(write):
    """Write a file with `write(path)` and attndsl.load it."""
    def run():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "attn.pt")
            write(path)
            return attndsl.load(path)
    return run


def _good_module_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.pt")
        attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), backend="eager").save(path)
        with open(path, "rb") as f:
            return f.read()


def _other_weights(path):
    good = torch.load(_write_good(path), weights_only=True)
    good["state_dict"] = attndsl.compile("elsa", dim=48, resolution=(14, 14)).state_dict()
    torch.save(good, path)


def _write_good(path):
    with open(path, "wb") as f:
        f.write(_good_module_bytes())
    return path


def _write(data: bytes):
    def write(path):
        with open(path, "wb") as f:
            f.write(data)
    return write


def _save_to(target):
    def run():
        m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), backend="eager")
        with tempfile.TemporaryDirectory() as d:
            m.save(target(d))
    return run


def spec_path(make):
    """attndsl.load_spec of the path `make(folder)` returns: a directory, a FIFO, a link …"""
    def run():
        with tempfile.TemporaryDirectory() as d:
            return attndsl.load_spec(make(d))
    return run


def _directory(d):
    os.mkdir(path := os.path.join(d, "spec.yaml"))
    return path


def _fifo(d):
    os.mkfifo(path := os.path.join(d, "spec.yaml"))     # opening it would wait for a writer
    return path


def _link_to(target):
    def make(d):
        os.symlink(target, path := os.path.join(d, "spec.yaml"))
        return path
    return make


def _file(name, text):
    def make(d):
        with open(path := os.path.join(d, name), "w") as f:
            f.write(text)
        return path
    return make


def _json_of(text):
    import json
    import yaml
    return json.dumps(yaml.safe_load(text), indent=1)


ALIAS_BOMB = "name: bomb\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
TWO_BRANCHES = """\
name: demo
heads: 4
branches:
  - name: {a}
    heads: 2
    projections: {{layout: qkv, bias: true}}
    parameterization: {{kind: additive, terms: [query_key]}}
    normalization: {{kind: softmax}}
    application: {{kind: window, size: 7, shift: 3}}
  - name: {b}
    heads: rest
    projections: {{layout: qkv, bias: true}}
    parameterization: {{kind: additive, terms: [query_key]}}
    normalization: {{kind: softmax}}
    application: {{kind: global}}
"""
LINFORMER = spec_text("application: {kind: window, size: 7}",
                      "application: {kind: soft_select, keys: 64}",
                      base=BASE.replace("[query_key, rel_pos_bias]", "[query_key]"))
GLOBAL_REL_POS = spec_text("application: {kind: window, size: 7}", "application: {kind: global}")


def branch_named(name):
    return compiled(TWO_BRANCHES.format(a=name, b="other"), dim=48)


CASES = {
    # ---- YAML itself
    "alias-bomb": ("refuse", loaded(ALIAS_BOMB)),
    "recursive-alias": ("refuse", loaded("name: x\na: &a [*a]\n")),
    "deep-nesting": ("refuse", loaded("name: x\nextras: " + "[" * 5000 + "]" * 5000 + "\n")),
    "tab-indent": ("refuse", loaded("name: x\n\theads: 3\n")),
    "not-a-mapping": ("refuse", loaded("- name: x\n")),
    "empty-text": ("refuse", loaded("")),
    "duplicate-key": ("refuse", loaded(BASE + "heads: 4\n")),
    "huge-description": ("refuse", loaded(BASE + "description: " + "x" * (2 << 20) + "\n")),
    "unknown-key": ("refuse", loaded(BASE + "heds: 3\n")),
    "unknown-kind": ("refuse", loaded(spec_text("kind: window", "kind: windw"))),
    "missing-axis": ("refuse", loaded(spec_text("normalization: {kind: softmax}\n", ""))),
    "null-application": ("refuse", loaded(spec_text("{kind: window, size: 7}", "null"))),
    "list-for-mapping": ("refuse", loaded(spec_text("{kind: window, size: 7}", "[window, 7]"))),
    "binary-junk": ("refuse", loaded("\x00\x01\x02name: x")),
    "missing-file": ("refuse", loaded("no/such/spec.yaml")),
    "unknown-zoo-name": ("refuse", loaded("swin_wmas")),
    # ---- numbers that are not numbers, or not sane
    "size-true": ("refuse", loaded(spec_text("size: 7", "size: true"))),
    "size-string": ("refuse", loaded(spec_text("size: 7", "size: '7'"))),
    "size-float": ("refuse", loaded(spec_text("size: 7", "size: 7.5"))),
    "size-zero": ("refuse", loaded(spec_text("size: 7", "size: 0"))),
    "size-negative": ("refuse", loaded(spec_text("size: 7", "size: -7"))),
    "heads-zero": ("refuse", loaded(spec_text("heads: 3", "heads: 0"))),
    "heads-string": ("refuse", loaded(spec_text("heads: 3", "heads: three"))),
    "heads-float": ("refuse", loaded(spec_text("heads: 3", "heads: 2.5"))),
    "temperature-denormal": ("refuse", compiled(spec_text(
        "{kind: softmax}", "{kind: softmax, temperature: 1.0e-320}"))),
    "temperature-negative": ("refuse", loaded(spec_text(
        "{kind: softmax}", "{kind: softmax, temperature: -1}"))),
    "scale-huge": ("refuse", compiled(spec_text(
        "[query_key, rel_pos_bias]}", "[query_key, rel_pos_bias], scale: 1.0e308}"))),
    "scale-nan": ("refuse", loaded(spec_text(
        "[query_key, rel_pos_bias]}", "[query_key, rel_pos_bias], scale: .nan}"))),
    "scale-inf": ("refuse", loaded(spec_text(
        "[query_key, rel_pos_bias]}", "[query_key, rel_pos_bias], scale: .inf}"))),
    "dropout-above-1": ("refuse", loaded(BASE + "dropout: {attention: 1.5}\n")),
    "layernorm-eps-denormal": ("refuse", compiled(spec_text(
        "{kind: softmax}", "{kind: layernorm, eps: 1.0e-320}"))),
    "terms-empty": ("refuse", loaded(spec_text("[query_key, rel_pos_bias]", "[]"))),
    "terms-unknown": ("refuse", loaded(spec_text("[query_key, rel_pos_bias]", "[qk]"))),
    "name-with-space": ("refuse", loaded(spec_text("name: demo", "name: my attention"))),
    "name-uppercase": ("refuse", loaded(spec_text("name: demo", "name: Demo"))),
    "shift-negative": ("refuse", loaded(spec_text("size: 7}", "size: 7, shift: -3}"))),
    "dilation-zero": ("refuse", loaded(spec_text(
        "{kind: window, size: 7}", "{kind: sliding, size: 7, dilation: 0}"))),
    # ---- sizes without an upper bound, or against the grid
    "boat-iterations-1e9": ("refuse", compiled(spec_text(
        "{kind: window, size: 7}", "{kind: clusters, size: 49, iterations: 1000000000}",
        base=BASE.replace("[query_key, rel_pos_bias]", "[query_key]")))),
    "qk-width-1e9": ("refuse", compiled(spec_text(
        "{layout: qkv, bias: true}",
        "{layout: qkv, bias: true, qk_width: {num: 1000000000, den: 1}}"))),
    "soft-select-keys-1e9": ("refuse", compiled(LINFORMER.replace("keys: 64",
                                                                  "keys: 1000000000"))),
    "value-conv-1000001": ("refuse", compiled(spec_text(
        "{kind: window, size: 7}", "{kind: global}",
        extra="extras: {value_conv: {size: 1000001}}\n"))),
    "peg-999999": ("refuse", compiled(BASE + "positional: [{kind: peg, size: 999999}]\n")),
    "window-1e9-with-table": ("refuse", compiled(spec_text(
        "size: 7}", "size: 1000000000, padding: pad_unmasked}"))),
    "sliding-1e9": ("refuse", compiled(spec_text(
        "{kind: window, size: 7}", "{kind: sliding, size: 1000000001}"))),
    "pad-to-multiple-1e9": ("refuse", compiled(BASE + "pad_to_multiple: 1000000000\n")),
    "dim-and-heads-1e6": ("refuse", compiled(BASE, dim=1000000, heads=1000000)),
    "global-rel-pos-160": ("refuse", compiled(GLOBAL_REL_POS, res=(160, 160))),
    "linformer-4096": ("refuse", compiled(LINFORMER, res=(4096, 4096))),
    "window-larger-than-grid-no-policy": ("refuse", compiled(spec_text("size: 7", "size: 9"),
                                                             res=(8, 8))),
    "even-neighbourhood": ("refuse", compiled(spec_text(
        "{kind: window, size: 7}", "{kind: sliding, size: 6}"))),
    "pooling-ratio-above-grid": ("refuse", compiled(spec_text(
        "projections: {layout: qkv, bias: true}", "projections: {layout: q_kv, bias: true}",
        base=BASE.replace("[query_key, rel_pos_bias]", "[query_key]")).replace(
        "{kind: window, size: 7}", "{kind: pooled, op: avg, ratio: 99}"))),
    "clusters-wrong-n": ("refuse", compiled(spec_text(
        "{kind: window, size: 7}", "{kind: clusters, size: 49}",
        base=BASE.replace("[query_key, rel_pos_bias]", "[query_key]")), res=(15, 15))),
    # ---- branch names that meet Python
    "branch-forward": ("refuse", branch_named("forward")),
    "branch-plan": ("refuse", branch_named("plan")),
    "branch-training": ("refuse", branch_named("training")),
    "branch-dtype": ("refuse", branch_named("dtype")),
    "branch-for": ("refuse", branch_named("for")),
    "branch-class": ("refuse", branch_named("class")),
    "branch-duplicate": ("refuse", compiled(TWO_BRANCHES.format(a="same", b="same"))),
    "branch-merge": ("refuse", branch_named("merge")),
    # ---- Python API arguments
    "resolution-string": ("refuse", api(resolution="14")),
    "resolution-floats": ("refuse", api(resolution=(14.7, 14.2))),
    "resolution-inf": ("refuse", api(resolution=(float("inf"), 14))),
    "resolution-zero": ("refuse", api(resolution=(0, 14))),
    "resolution-three": ("refuse", api(resolution=(14, 14, 3))),
    "dim-float": ("refuse", api(dim=96.5)),
    "dim-bool": ("refuse", api(dim=True)),
    "dim-zero": ("refuse", api(dim=0)),
    "heads-list": ("refuse", api(heads=[6])),
    "heads-not-dividing": ("refuse", api(heads=5)),
    "dtype-unknown": ("refuse", api(dtype="float8")),
    "dtype-integer": ("refuse", api(dtype=torch.int64)),
    "device-unknown": ("refuse", api(device="gpu")),
    "device-cuda-absent": ("refuse", api(device="cuda:7")),
    "backend-unknown": ("refuse", api(backend="tvm")),
    "passes-string": ("refuse", api(passes="eliminate_dead_code")),
    "passes-unknown": ("refuse", api(passes=["fuse_everything"])),
    # ---- inputs
    "input-wrong-channels": ("refuse", forward(lambda: torch.randn(2, 14, 14, 47))),
    "input-3d": ("refuse", forward(lambda: torch.randn(2, 196, 48))),
    "input-int": ("refuse", forward(lambda: torch.ones(2, 14, 14, 48, dtype=torch.long))),
    "input-meta": ("refuse", forward(lambda: torch.empty(2, 14, 14, 48, device="meta"))),
    "input-empty-batch": ("refuse", forward(lambda: torch.randn(0, 14, 14, 48))),
    "input-list": ("refuse", forward(lambda: [[1.0] * 48])),
    "tokens-scalar-size": ("refuse", forward(lambda: torch.randn(2, 196, 48), 14)),
    "tokens-three-sizes": ("refuse", forward(lambda: torch.randn(2, 196, 48), (14, 14, 1))),
    "tokens-negative-size": ("refuse", forward(lambda: torch.randn(2, 196, 48), (-14, -14))),
    "tokens-float-size": ("refuse", forward(lambda: torch.randn(2, 196, 48), (14.0, 14.0))),
    "tokens-wrong-n": ("refuse", forward(lambda: torch.randn(2, 195, 48), (14, 14))),
    # ---- files
    "load-truncated": ("refuse", saved_file(lambda p: _write(_good_module_bytes()[:4000])(p))),
    "load-empty": ("refuse", saved_file(_write(b""))),
    "load-10-bytes": ("refuse", saved_file(_write(b"0123456789"))),
    "load-no-state-dict": ("refuse", saved_file(
        lambda p: torch.save({"format": "attndsl-module/1", "spec": BASE}, p))),
    "load-plain-state-dict": ("refuse", saved_file(
        lambda p: torch.save(attndsl.compile("elsa", dim=48, resolution=(14, 14)).state_dict(),
                             p))),
    "load-other-spec-weights": ("refuse", saved_file(_other_weights)),
    "load-directory": ("refuse", lambda: attndsl.load(tempfile.gettempdir())),
    "save-missing-folder": ("refuse", _save_to(lambda d: os.path.join(d, "no", "attn.pt"))),
    "save-onto-folder": ("refuse", _save_to(lambda d: d)),
    "spec-path-directory": ("refuse", spec_path(_directory)),
    "spec-path-fifo": ("refuse", spec_path(_fifo)),
    "spec-path-link-to-urandom": ("refuse", spec_path(_link_to("/dev/urandom"))),
    "spec-path-broken-link": ("refuse", spec_path(_link_to("/nonexistent/spec.yaml"))),
    "spec-path-without-suffix": ("refuse", spec_path(_file("spec", BASE))),
    # ---- valid edge cases that must keep working
    "ok-exponent-without-sign": ("accept", compiled(spec_text(
        "{kind: softmax}", "{kind: softmax, temperature: 1e2}"))),
    "ok-window-over-small-grid": ("accept", compiled(spec_text(
        "size: 7}", "size: 7, padding: pad_unmasked}"), res=(5, 5))),
    "ok-heads-channels": ("accept", api(heads=48, resolution=(7, 7))),
    "ok-numpy-int-dim": ("accept", lambda: attndsl.compile(
        "swin_wmsa", dim=__import__("numpy").int64(48), resolution=[14, 14])),
    "ok-torch-size-resolution": ("accept", api(resolution=torch.Size([14, 14]))),
    "ok-dtype-name": ("accept", api(dtype="float64")),
    "ok-linformer-64": ("accept", compiled(LINFORMER, res=(64, 64))),
    # SDPA's fused kernel never holds ViT's 12544² weights: the memory estimate knows it
    "ok-vit-global-112": ("accept", lambda: attndsl.compile(
        "vit_mhsa", dim=192, resolution=(112, 112), heads=12)),
    "ok-branch-named-attention": ("accept", branch_named("attention")),
    "ok-mask-named-branch": ("accept", compiled(TWO_BRANCHES.format(a="a", b="a_mask"))),
    "ok-upper-case-suffix": ("accept", spec_path(_file("SPEC.YAML", BASE))),
    "ok-json-spec": ("accept", spec_path(_file("spec.json", _json_of(BASE)))),
}
