"""The compiled module users hold: parameters with stable names, plus a small cache of
lowered GraphModules (one per resolution × train/eval × dtype × device), each run by the
chosen backend."""
from __future__ import annotations

import copy
import dataclasses
import os
import types
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from ..errors import ArgumentError, AttndslError, ShapeError
from ..lang import arguments
from ..lang.bind import Plan, bind, kinds_with
from ..lang.io import SpecLike, dump_spec, load_spec, load_spec_text
from .autoplan import ATTENTION, decide, explain
from .footprint import check_footprint
from .lower import lower
from .passes import ENGINES, PROLOGUE, pass_names
from .params import spec_parameters
from ..terms import term_of

SAVE_FORMAT = "attndsl-module/1"
BACKBONE_FORMAT = "attndsl-backbone/1"   # attndsl.model.BackboneNet.save
CACHE_SIZE = 8   # graphs kept per module; a resolution sweep beyond this re-lowers
# compiled programs take any batch size (benchmarks/dynamic_batch.py turns it off to
# measure what the dynamic batch costs at run time)
DYNAMIC_BATCH = True


# ---------------------------------------------------------------- backends
def _eager(gm: fx.GraphModule, plan: Plan, key=None) -> Callable:
    return gm


# One compiled program per graph *structure* in a process: a second module of the same
# spec, sizes, dtype and device reuses it with its own parameters (no new compile).
_COMPILED: OrderedDict = OrderedDict()
COMPILED_PROGRAMS = 64     # bound for long-lived processes (searches compile many specs)
compile_stats = {"compiled": 0, "reused": 0}


def _no_statics() -> tuple:
    return ()


def _inductor(gm: fx.GraphModule, plan: Plan, key=None) -> Callable:
    # parameter-only work (table gathers, masks) runs eagerly before the compiled program,
    # as the split_parameter_prologue pass divided it (without that pass: one program)
    prologue, main = gm.meta.get(PROLOGUE) or (_no_statics, gm)
    dynamic_batch = DYNAMIC_BATCH
    if key is None or key not in _COMPILED:
        # the template holds placeholders, not this module's parameters: had it aliased
        # them, dynamo would guard on that aliasing and recompile for the next module
        template = copy.deepcopy(main, memo={
            id(p): nn.Parameter(torch.empty_like(p, device="meta")) for p in main.parameters()})

        def run(params: dict, x, statics):
            return torch.func.functional_call(template, params, (x, *statics))

        # dynamo keeps its cache on the code object, and every program would share
        # run's: give each its own, or the 9th program hits the recompile limit
        code = run.__code__.replace(co_name=f"attndsl_program_{compile_stats['compiled']}")
        run = types.FunctionType(code, run.__globals__, code.co_name, None, run.__closure__)
        # the batch is dynamic (marked per call below): one program serves every batch size
        # (dynamo specializes a batch of 1, so at most two compiles), where a static batch
        # recompiled per size and failed at the 9th. Nothing else varies within a program.
        compiled = torch.compile(run, backend="inductor", fullgraph=True,
                                 dynamic=None if dynamic_batch else False)
        compile_stats["compiled"] += 1
        if key is not None:
            _COMPILED[key] = compiled
            if len(_COMPILED) > COMPILED_PROGRAMS:
                _COMPILED.popitem(last=False)
    else:
        compiled = _COMPILED[key]
        _COMPILED.move_to_end(key)
        compile_stats["reused"] += 1
    params = dict(main.named_parameters())

    def call(x):
        if dynamic_batch:
            x = x.view_as(x)      # mark an alias: the caller's tensor keeps no dynamo marks
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return compiled(params, x, prologue())
    return call


def _auto(gm: fx.GraphModule, plan: Plan, key=None) -> Callable:
    """Inductor when some branch needs fusion; the eager graph when every branch already
    runs in SDPA's fused kernel (autoplan decided which, when the graph was lowered)."""
    return _inductor(gm, plan, key) if gm.meta[ENGINES].compiled else gm


BACKENDS: dict[str, Callable[[fx.GraphModule, Plan], Callable]] = {
    "eager": _eager, "inductor": _inductor, "auto": _auto,
}


def check_backend(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ArgumentError(f"unknown backend {name!r}; valid backends: {sorted(BACKENDS)}",
                            argument="backend")
    return name


def check_attention(name: str) -> str:
    if not isinstance(name, str) or name not in ATTENTION:
        raise ArgumentError(f"unknown attention engine {name!r}; valid: "
                            f"{', '.join(ATTENTION)}", argument="attention")
    return name


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def resolve_dtype(dtype) -> torch.dtype | None:
    """None, a floating torch.dtype, or its name ("float32", "bfloat16", …)."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    raise ArgumentError(f"dtype must be a floating dtype, got {dtype!r}; valid: "
                        f"{', '.join(sorted(_DTYPES))} (names or torch dtypes)", argument="dtype")


def resolve_device(device) -> torch.device | None:
    """None, or a device this process can run on ("cpu", "cuda", "cuda:1", torch.device)."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ArgumentError(f"device must be a device to run on such as 'cpu' or 'cuda:0', "
                            f"got {device!r}", argument="device")
    if resolved.type != "cpu":
        backend = getattr(torch, resolved.type, None)
        count = backend.device_count() if backend and backend.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise ArgumentError(f"device {device!r} is not available in this process "
                                f"({count} {resolved.type} device(s)); valid: 'cpu'"
                                + (f" or '{resolved.type}:0'…'{resolved.type}:{count - 1}'"
                                   if count else ""), argument="device")
    return resolved


def _autocast_input(x: torch.Tensor) -> bool:
    """x is in the dtype autocast computes in on its device (it came out of an autocast
    matmul): the module's own matmuls run in that dtype too, so it is taken as is."""
    kind = x.device.type
    return torch.is_autocast_enabled(kind) and x.dtype == torch.get_autocast_dtype(kind)


# ---------------------------------------------------------------- the module
class CompiledAttention(nn.Module):
    """An attention mechanism compiled from a spec.

    forward(x):  x (B, H, W, C) channels-last token grid → (B, H, W, C)
    forward_tokens(x, (H, W)):  x (B, N, C), N = H·W row-major → (B, N, C)

    >>> attn = CompiledAttention("swin_wmsa", dim=96, resolution=(56, 56))  # doctest: +SKIP
    >>> attn(torch.randn(2, 56, 56, 96)).shape                             # doctest: +SKIP
    torch.Size([2, 56, 56, 96])
    """

    def __init__(self, spec: SpecLike, dim: int, resolution, *, heads: int | None = None,
                 backend: str = "eager", passes: list[str] | None = None,
                 attention: str = "auto", prepare: bool = True):
        super().__init__()
        self.spec = load_spec(spec)
        self.dim, self.heads_override = arguments.dim(dim), arguments.heads(heads)
        self.plan: Plan = bind(self.spec, self.dim, resolution, heads)
        check_footprint(self.plan)       # before any parameter is allocated
        # the number of class tokens when only they query (class attention), else None
        first = self.plan.branches[0]
        self._class_tokens = first.spec.application.tokens \
            if first.kind.prefix_queries else None
        self._graphs: OrderedDict = OrderedDict()
        self.backend, self.passes = backend, passes
        self.attention_engine = attention
        for name, mod in spec_parameters(self.plan).items():
            self.add_module(name, mod)
        self.lowerings = 0   # how many graphs were built (tests count recompilation)
        # prepare=False: the caller (compile) sets dtype, device and engine first and then
        # prepares once, rather than lowering a graph for every intermediate state
        self._ready = prepare
        if prepare:
            self.prepare()

    def _invalidate_graphs(self) -> None:
        self._graphs.clear()
        if self.__dict__.get("_ready"):     # not while the first values are being set
            self.prepare()

    # -- plans and graphs ------------------------------------------------------------
    @property
    def backend(self) -> str:
        """"auto", "eager" or "inductor"; setting it drops the graphs built for the old one."""
        return self._backend

    @backend.setter
    def backend(self, value):
        if check_backend(value) != getattr(self, "_backend", None):
            self._backend = value
            self._invalidate_graphs()

    @property
    def attention_engine(self) -> str:
        """The engine of the softmax-attention branches: "auto" (autoplan's rules for the
        device and dtype), "sdpa", "flex" (FlexAttention) or "explicit"; setting it drops
        the graphs built for the old one."""
        return self._attention

    @attention_engine.setter
    def attention_engine(self, value):
        check_attention(value)
        if value != "auto":       # a branch that can't take it: said now, not at forward
            dtype, device = self._dtype_device()
            decide(self.plan, self.backend, dtype=dtype, device=device, attention=value)
        if value != getattr(self, "_attention", None):
            self._attention = value
            self._invalidate_graphs()

    @property
    def passes(self) -> list[str] | None:
        """The passes run on every lowered graph (None: the whole pipeline, []: none)."""
        return self._passes

    @passes.setter
    def passes(self, value):
        value = arguments.passes(value, pass_names())
        if "_passes" not in self.__dict__ or value != self._passes:
            self._passes = value
            self._invalidate_graphs()     # graphs lowered with the old passes are stale

    @property
    def resolution(self) -> tuple[int, int]:
        return self.plan.resolution

    def _param_modules(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def plan_for(self, resolution) -> Plan:
        plan = bind(self.spec, self.dim, resolution, self.heads_override)
        if plan.resolution != self.plan.resolution:
            with torch.device("meta"):
                params = spec_parameters(plan)
            wanted = {f"{n}.{k}": tuple(v.shape) for n, mod in params.items()
                      for k, v in mod.state_dict().items()}
            have = {k: tuple(v.shape) for k, v in self.state_dict().items()}
            if wanted != have:
                diff = sorted(k for k in set(wanted) | set(have) if wanted.get(k) != have.get(k))
                raise ShapeError(
                    f"spec '{self.spec.name}' has parameters sized for the {self.resolution} "
                    f"grid ({', '.join(diff[:4])}); it cannot run at {plan.resolution}. "
                    "Compile it again at that resolution.")
            dtype, device = self._dtype_device()
            check_footprint(plan, device, dtype, params)
        return plan

    def _dtype_device(self):
        for t in list(self.parameters()) + list(self.buffers()):
            return t.dtype, t.device
        return torch.get_default_dtype(), torch.device("cpu")

    def graph_module(self, resolution=None, training: bool | None = None) -> fx.GraphModule:
        """The lowered fx.GraphModule for a resolution (default: the bound one)."""
        return self._entry(self._lowered_at(resolution or self.resolution),
                           self.training if training is None else training)[0]

    def _lowered_at(self, grid) -> tuple[int, int]:
        """The resolution of the graph that runs for a grid: the grid itself, or for class
        attention the one row its class tokens and the grid's tokens make (forward_tokens
        with prefix = its class tokens)."""
        if self._class_tokens is None:
            return tuple(grid)
        H, W = arguments.resolution(grid, "resolution", square_ok=False)
        return 1, self._class_tokens + H * W

    def _graph_key(self, resolution, training: bool, tokens=None) -> tuple:
        """What a lowered graph depends on besides the module's settings."""
        dtype, device = self._dtype_device()
        return tuple(resolution), training, dtype, device, tokens

    def _entry(self, resolution, training: bool, tokens=None):
        """The (graph, runner) for a grid; `tokens` (P, H, W) when the grid is the row of P
        prefix tokens and an H×W grid that a rotary spec reads positions from."""
        key = self._graph_key(resolution, training, tokens)
        _, _, dtype, device, _ = key
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        plan = self.plan if tuple(resolution) == self.plan.resolution \
            else self.plan_for(resolution)
        if tokens is not None:
            plan = dataclasses.replace(plan, tokens=tokens)
        engines = decide(plan, self.backend, training=training, dtype=dtype, device=device,
                         attention=self.attention_engine)
        gm = lower(plan, self._param_modules(), dtype=dtype, device=device,
                   training=training, passes=self.passes, engines=engines)
        # passes=None (the whole pipeline) and passes=[] (none) are different programs
        passes = "*" if self.passes is None else tuple(self.passes)
        structure = (self.spec, self.dim, self.heads_override, passes, engines, DYNAMIC_BATCH)
        entry = (gm, BACKENDS[self.backend](gm, plan, structure + key))
        self.lowerings += 1
        self._graphs[key] = entry
        if len(self._graphs) > CACHE_SIZE:
            self._graphs.popitem(last=False)
        return entry

    def prepare(self, resolution=None) -> None:
        """Lower the graph for `resolution` (default: the bound one) in the module's current
        mode, dtype and device, so that a user's torch.compile around this module finds it
        built: inside a compiled region the module only looks its graph up and dynamo traces
        that graph, never attndsl's lowering. Construction, `.train()`/`.eval()` and
        `.to()` call it for the bound resolution; call it for another resolution before
        compiling a model that runs there (outside a compiled region a forward does it)."""
        try:
            self._entry(self._lowered_at(resolution or self.resolution), self.training)
        except AttndslError:
            if resolution is not None:
                raise
            # the bound resolution at construction: the first forward raises the same
            # error with the input that provoked it; a module is still built (and savable)

    def _graph_in_trace(self, resolution, tokens=None) -> fx.GraphModule:
        """The lowered graph while dynamo traces this module (see prepare)."""
        entry = self._graphs.get(self._graph_key(resolution, self.training, tokens))
        if entry is None:
            entry = _lower_outside_trace(self, resolution, tokens)
        return entry[0]

    def explain_plan(self) -> str:
        """Which engine runs each branch, and why (the rules of codegen/autoplan.py)."""
        dtype, device = self._dtype_device()
        return explain(self.plan, self.backend, device=device, dtype=dtype,
                       attention=self.attention_engine)

    @property
    def code(self) -> str:
        """Python source of the generated forward at the bound resolution."""
        return self.graph_module().code

    # -- running -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._class_tokens is not None:
            raise ShapeError(f"'{self.spec.name}' is class attention: its queries are the "
                             f"{self._class_tokens} class token(s) before the grid, which a "
                             "(B, H, W, C) map lacks; call forward_tokens(x, (H, W), "
                             f"prefix={self._class_tokens}) with x (B, {self._class_tokens} "
                             f"+ H·W, {self.dim})")
        return self._forward_map(x)

    def _forward_map(self, x: torch.Tensor, tokens=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"'{self.spec.name}' expects x of shape (B, H, W, {self.dim}) "
                             f"(channels last), got {shape}; for (B, N, C) tokens call "
                             "forward_tokens(x, (H, W))")
        dtype, device = self._dtype_device()
        if x.dtype != dtype and not _autocast_input(x):
            raise ShapeError(f"input dtype {x.dtype} does not match the module's {dtype}; "
                             f"cast one of them (module.to({x.dtype}) or x.to({dtype}))")
        if x.device != device:
            raise ShapeError(f"input is on {x.device}, the module on {device}: move one of "
                             f"them (module.to('{x.device}') or x.to('{device}'))")
        if x.shape[0] == 0:
            raise ShapeError(f"'{self.spec.name}' got an empty batch {tuple(x.shape)}; "
                             "a batch holds at least one image")
        if torch.compiler.is_compiling():
            # a user's torch.compile around this module: trace the lowered graph itself,
            # so that their compile fuses it with the rest of their model
            return self._graph_in_trace((x.shape[1], x.shape[2]), tokens)(x)
        return self._entry((x.shape[1], x.shape[2]), self.training, tokens)[1](x)

    def forward_tokens(self, x: torch.Tensor, size, prefix: int = 0) -> torch.Tensor:
        """timm-style entry: x (B, N, C) with N = prefix + H·W (the grid row-major after
        `prefix` class / register tokens) → (B, N, C) ((B, H·W/s², C) when the queries are
        strided: HaloNet's stride s; (B, tokens, C) for class attention, whose queries are
        the first `tokens` prefix tokens). Prefix tokens need every branch's
        application to have a rule for them (`global`: attended like any token) and no
        term or extra that places tokens on the grid; the refusal says which is missing."""
        H, W = arguments.resolution(size, "size", square_ok=False)
        prefix = arguments.integer(prefix, "prefix", low=0, high=arguments.MAX_SIDE)
        n = prefix + H * W
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != n:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            tokens = f"{prefix}+{H}*{W}={n}" if prefix else f"{H}*{W}={n}"
            raise ShapeError(f"forward_tokens expects (B, {tokens}, {self.dim}), got {shape}")
        queries = self._class_tokens
        if queries is not None and prefix < queries:
            raise ShapeError(f"'{self.spec.name}' is class attention over {queries} class "
                             f"token(s) before the grid, but prefix={prefix}: pass "
                             f"prefix={queries} (or more) with the class tokens first")
        if not prefix:
            y = self._forward_map(x.reshape(x.shape[0], H, W, x.shape[2]))
            return y.flatten(1, 2)       # (B, N, C); N/s² tokens for strided queries
        why = prefix_token_refusal(self.plan)
        if why:
            raise ShapeError(f"spec '{self.spec.name}' can't take {prefix} prefix token(s): "
                             f"{why}")
        # attended like any token: the tokens are one row (a rotary spec reads the grid
        # positions of the row's tokens from `tokens`; the prefix tokens are not rotated)
        tokens = (prefix, H, W) if self.plan.rotary else None
        y = self._forward_map(x.reshape(x.shape[0], 1, n, x.shape[2]), tokens)
        return y.flatten(1, 2)      # (B, N, C); (B, tokens, C) for class attention

    # -- keep the cache consistent -------------------------------------------------------
    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self._invalidate_graphs()   # constants were made for the old dtype / device
        return result

    def train(self, mode: bool = True):
        result = super().train(mode)
        if self.__dict__.get("_ready"):
            self.prepare()      # dropout and friends lower differently per mode (a no-op
        return result           # when this mode's graph is cached)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_graphs"] = OrderedDict()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.prepare()      # a copy or an unpickled module is ready for torch.compile too

    def extra_repr(self) -> str:
        return (f"spec={self.spec.name!r}, dim={self.dim}, resolution={self.resolution}, "
                f"heads={self.plan.heads}, backend={self.backend!r}"
                + (f", attention={self.attention_engine!r}"
                   if self.attention_engine != "auto" else ""))

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write spec text + sizes + passes + state dict; `attndsl.load(path)` rebuilds the
        module (the spec text is stored, never a path to read again)."""
        path = check_output_path(path, "module file")
        torch.save({"format": SAVE_FORMAT, "spec": dump_spec(self.spec), "dim": self.dim,
                    "resolution": list(self.resolution), "heads": self.heads_override,
                    "backend": self.backend, "passes": self.passes,
                    "attention": self.attention_engine,
                    "state_dict": self.state_dict()}, path)


@torch.compiler.disable(reason="attndsl lowers a module's graph for a new resolution, "
                          "dtype, device or mode outside the compiled region: call "
                          "module.prepare(resolution) (or run the model once) before "
                          "torch.compile(..., fullgraph=True)")
def _lower_outside_trace(module: CompiledAttention, resolution, tokens=None):
    """A graph nobody prepared (a resolution first seen inside a user's compiled region):
    lowered eagerly at a graph break."""
    return module._entry(resolution, module.training, tokens)


def check_output_path(path, what: str) -> Path:
    """A file path whose folder exists and that is not itself a folder."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ArgumentError(f"the {what} path must be a file path, got {path!r}", argument="path")
    path = Path(path)
    if path.is_dir():
        raise ArgumentError(f"{path} is a directory; give a file path for the {what} "
                            f"(e.g. {path / 'attn.pt'})", argument="path")
    if not path.parent.is_dir():
        raise ArgumentError(f"cannot write the {what} {path}: folder {path.parent} does not "
                            "exist (create it first)", argument="path")
    return path


def prefix_token_refusal(plan: Plan) -> str | None:
    """None when class / register tokens before the grid can join every branch's keys and
    queries as tokens like the others, else why not."""
    if plan.spec.positional:
        return "a positional encoding convolves the grid"
    for bp in plan.branches:
        b, kind = bp.spec, bp.kind
        where = f"branch '{bp.name}'" if len(plan.branches) > 1 else "its application"
        if not kind.prefix_tokens:
            return (f"{where} '{kind.name}' has no rule for prefix tokens (kinds with one: "
                    f"{kinds_with('prefix_tokens')})")
        terms = getattr(b.parameterization, "terms", ())
        placed = [t.kind for t in terms if term_of(t).offsets]
        if placed:
            return f"its term(s) {', '.join(placed)} index grid offsets, which a prefix token lacks"
        if b.extras.value_conv is not None or b.projections.q_conv is not None \
                or b.kernel.size > 1:
            return "a convolution over the grid (value_conv, q_conv or K×K keys)"
    return None


def compile(spec: SpecLike, dim: int, resolution, *, heads: int | None = None,
            backend: str = "auto", dtype=None, device=None,
            passes: list[str] | None = None, attention: str = "auto") -> CompiledAttention:
    """Compile a spec (path, zoo name, YAML text, dict or Spec) into an nn.Module.

    x (B, H, W, dim) → (B, H, W, dim). `resolution` is the (H, W) the parameters are sized
    for and the first graph is built for; other resolutions are lowered on first use when
    the parameters allow it. `attention`: the engine of the softmax-attention branches —
    "auto" (autoplan's rules for the module's device and dtype), "sdpa", "flex"
    (FlexAttention: the key set as a BlockMask, the logit terms as a score_mod) or
    "explicit"; a branch that can't run in the engine asked for is an error that says why.

    >>> import attndsl, torch
    >>> attn = attndsl.compile("swin_wmsa", dim=96, resolution=(14, 14))
    >>> attn(torch.randn(2, 14, 14, 96)).shape
    torch.Size([2, 14, 14, 96])
    """
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    check_attention(attention)
    module = CompiledAttention(spec, dim, resolution, heads=heads, backend=backend,
                               passes=passes, prepare=False)
    if dtype is not None or device is not None:
        check_footprint(module.plan, device, dtype or torch.float32)
        module = module.to(device=device, dtype=dtype)
    module.attention_engine = attention   # checked against the rules of the module's device
    module._ready = True
    module.prepare()
    return module


def load(path: str | os.PathLike, *, backend: str | None = None,
         map_location=None) -> CompiledAttention:
    """Load one attention module written by `CompiledAttention.save` / `attndsl compile
    --out`. `attndsl.load` also takes a whole backbone's file; this layer, below the
    backbone, refuses one by name."""
    blob = read_module_file(path, map_location)
    if blob.get("format") == BACKBONE_FORMAT:
        raise AttndslError(f"{path} holds a whole backbone (attndsl compile BACKBONE), not one "
                           "attention module: load it with attndsl.load")
    return load_module_blob(blob, path, backend=backend)


def load_module_blob(blob: dict, path, *, backend: str | None = None) -> CompiledAttention:
    """The attention module of a file `read_module_file` read."""
    missing = sorted({"spec", "dim", "resolution", "state_dict"} - set(blob))
    if missing:
        raise AttndslError(f"{path} is an attndsl module file without {missing}: it was cut "
                           "or written by something else; save the module again")
    state = blob["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AttndslError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    try:
        spec = load_spec_text(blob["spec"], origin=f"{path} (stored spec)")
        module = CompiledAttention(spec, blob["dim"], blob["resolution"],
                                   heads=blob.get("heads"),
                                   backend=backend or blob.get("backend", "auto"),
                                   passes=blob.get("passes"),
                                   attention=blob.get("attention", "auto"))
    except AttndslError as exc:   # a hand-edited or foreign file: the same checks as the API
        raise AttndslError(f"{path}: the stored module is invalid: {exc}") from None
    first = next(iter(state.values()), None)
    if first is not None:
        if not first.dtype.is_floating_point:
            raise AttndslError(f"{path}: weights of dtype {first.dtype}; expected a float dtype")
        module = module.to(dtype=first.dtype, device=first.device)
    have = module.state_dict()
    unexpected = sorted(set(state) - set(have))
    absent = sorted(set(have) - set(state))
    mis_shaped = sorted(k for k in set(state) & set(have) if state[k].shape != have[k].shape)
    if unexpected or absent or mis_shaped:
        detail = "; ".join(f"{what}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                           for what, keys in (("missing", absent), ("unexpected", unexpected),
                                              ("wrong shape", mis_shaped)) if keys)
        raise AttndslError(f"{path}: the weights do not fit spec '{spec.name}' at dim "
                           f"{module.dim}, resolution {module.resolution} ({detail}); were "
                           "they saved from another spec?")
    module.load_state_dict(state)
    return module


def read_module_file(path, map_location) -> dict:
    """torch.load's many failure modes (missing, a folder, empty, cut short, not a torch
    file) as one AttndslError that says what the file is not."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"path must be a file path, got {path!r}", argument="path")
    p = Path(path)
    if not p.exists():
        raise AttndslError(f"no such file: {p}")
    if p.is_dir():
        raise AttndslError(f"{p} is a directory, not an attndsl module file")
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:   # EOFError, RuntimeError (zip reader), UnpicklingError, …
        reason = str(exc).strip().split(". ")[0][:160] if str(exc).strip() else type(exc).__name__
        raise AttndslError(f"{p} is not a readable attndsl module file ({p.stat().st_size} "
                           f"bytes; torch.load: {reason}); write one with module.save(path) "
                           "or attndsl compile --out") from None
    if not isinstance(blob, dict) or blob.get("format") not in (SAVE_FORMAT, BACKBONE_FORMAT):
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise AttndslError(f"{p} is not an attndsl module file (format {SAVE_FORMAT}, found "
                           f"{found!r}); for a foreign checkpoint use attndsl.convert")
    return blob


__all__ = ["CompiledAttention", "compile", "load", "BACKENDS"]
