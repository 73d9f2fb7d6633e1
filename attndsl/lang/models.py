"""The spec language: one frozen pydantic model per factor of the unified paradigm.

For every head g (or channel, for depthwise kernels) and query position i:

    y_i = Σ_{j ∈ S(i)} Norm_{j ∈ S(i)}( w_ij ) ⊙ v_j

Each factor is an *axis* of the spec, and each axis value is a component tagged by `kind`:

=================  =====================================================================
axis               what it decides
=================  =====================================================================
parameterization   how w_ij is made (sum of query·key / rel-pos terms, or Hadamard)
normalization      Norm over j ∈ S(i) (softmax, identity, ReLU, LayerNorm, filter norm …)
application        which j: S(i) (one module per kind: attndsl/applications/)
kernel_bank        where keys and values come from (dynamic, static, no value bank)
kernel             kernel type (standard / depthwise), kernel size, ghost-head expansion
projections        input projections (q/k/v layout, widths, bias) and output projection
extras             value conv (BOAT), output bias, residual
positional         positional encodings applied to the input (PEG / CPE)
branches           heads split across several such descriptions, outputs concatenated
=================  =====================================================================

A single-branch spec may write the branch axes at the top level; they are then read as the
one branch named ``attn``. Cross-field rules that need the model width, the resolution or
the head count are checked in :mod:`attndsl.lang.bind`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BeforeValidator, Field, PlainSerializer, field_validator,
                      model_validator)

from .component import Component, Float, Int  # noqa: F401  (re-exported)

DEFAULT_BRANCH = "attn"
RESERVED_NAMES = {"positional", "merge"}   # spec-level parameter modules
# A branch's parameters are a submodule named after it, on the compiled module and on the
# traced root, so a branch name must not shadow an attribute of either (nor of
# nn.Module); tests/test_spec_errors.py keeps this set in sync with the classes.
MODULE_ATTRIBUTES = frozenset({
    "backend", "code", "dim", "explain_plan", "forward_tokens", "graph_module",
    "heads_override", "lowerings", "passes", "plan", "plan_for", "resolution", "save", "spec",
    "dtype", "device", "is_training", "compiled", "engines", "shape_generic", "training",
    "attention_engine", "flex_key_sets", "prepare"})


def check_branch_name(name: str) -> str:
    """A branch name becomes a Python attribute and part of parameter names: refuse
    keywords and names that would shadow a module attribute."""
    import keyword

    from torch import nn
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValueError(f"branch name '{name}' is a Python keyword; choose another, e.g. "
                         f"'{name}_branch'")
    if name in MODULE_ATTRIBUTES or hasattr(nn.Module, name):
        raise ValueError(f"branch name '{name}' is reserved (an attribute of the compiled "
                         f"module); choose another, e.g. '{name}_branch'")
    return name


# ---------------------------------------------------------------- parameterization
# |scale| beyond 1e6 overflows the logits (1e308 made every output NaN)
Scale = Union[Annotated[Float, Field(ge=-1e6, le=1e6)], Literal["head_dim^-0.5"]]

# One module per term in attndsl/terms/; a term is written as its bare name, or as a
# mapping {kind: …, options} when it has options.
from ..terms import TERMS as _TERMS, models as _term_models   # noqa: E402

TERM_MODELS = _term_models()
TERM_DOC = {name: term.doc for name, term in _TERMS.items()}


def _term_entry(value):
    """A bare term name is the term with its defaults."""
    return {"kind": value} if isinstance(value, str) else value


def _term_text(value):
    """Written back as a bare name when it has no options set."""
    return value.kind if value == type(value)() else value.model_dump(mode="json")


TermEntry = Annotated[Union[TERM_MODELS], Field(discriminator="kind"),
                      BeforeValidator(_term_entry), PlainSerializer(_term_text)]


class CosineSimilarity(Component):
    """Scaled cosine attention: q and k are l2-normalized per head, and the query–key
    logits are multiplied by a learned per-head scale instead of the fixed s.

    scale_parameter: log    -- Swin-V2: the scale is exp(min(τ_g, log max_scale)), τ_g
                               starting at log init;
                     linear -- XCiT: the scale is τ_g itself (its `temperature`), starting
                               at init, unclamped (max_scale unused)."""

    kind: Literal["cosine"] = "cosine"
    max_scale: Float = Field(default=100.0, gt=1.0, le=1e6)
    init: Float = Field(default=10.0, gt=0.0, le=1e6)
    scale_parameter: Literal["log", "linear"] = "log"


class Additive(Component):
    """w_ij is a sum of terms (ZOO §1): query·key, relative-position terms, a static bias.

    similarity: dot (s·q·k) or cosine (Swin-V2: l2-normalized q and k, a learned per-head
    logit scale). rel_pos_orientation: how offset-indexed tables are read — by j − i, by
    i − j (timm's Swin / MaxViT index), or by |j − i| per axis (EfficientViT).
    """

    kind: Literal["additive"] = "additive"
    terms: tuple[TermEntry, ...] = Field(min_length=1)
    scale: Scale = "head_dim^-0.5"
    rel_pos_orientation: Literal["j_minus_i", "i_minus_j", "abs"] = "j_minus_i"
    similarity: Union[Literal["dot"], CosineSimilarity] = "dot"
    # a feature map φ on q and k before every term (linear attention: elu(x) + 1 or relu)
    feature_map: Literal["identity", "elu_plus_one", "relu"] = "identity"

    @field_validator("terms")
    @classmethod
    def _unique(cls, terms):
        kinds = [t.kind for t in terms]
        dupes = sorted({k for k in kinds if kinds.count(k) > 1})
        if dupes:
            raise ValueError(f"term(s) {dupes} listed more than once")
        return terms

    @property
    def term_kinds(self) -> tuple[str, ...]:
        return tuple(t.kind for t in self.terms)

    def term(self, kind: str):
        """The term of that kind (None when absent)."""
        return next((t for t in self.terms if t.kind == kind), None)


class Hadamard(Component):
    """ELSA (ZOO §2): h = q ⊙ k · s, logits = PW(act(DW(h))) with G·K² outputs."""

    kind: Literal["hadamard"] = "hadamard"
    dw_kernel: Int | None = Field(default=None, ge=1)
    group_width: Int = Field(default=8, ge=1)
    activation: Literal["gelu", "relu", "identity"] = "gelu"
    scale: Scale = 1.0


Parameterization = Annotated[Union[Additive, Hadamard], Field(discriminator="kind")]


# ---------------------------------------------------------------- normalization
# One module per kind in attndsl/normalizations/, each with its spec component; the axis is
# the union of every registered kind (re-exported here: m.Softmax, m.Sum, …).
from ..normalizations import models as _normalization_models          # noqa: E402

NORMALIZATION_MODELS = _normalization_models()
Normalization = Annotated[Union[NORMALIZATION_MODELS], Field(discriminator="kind")]
globals().update({cls.__name__: cls for cls in NORMALIZATION_MODELS})   # m.Softmax, m.Sum …


# ---------------------------------------------------------------- application (which j)
# One module per kind in attndsl/applications/, each with its spec component; the axis is
# the union of every registered kind (re-exported here: m.Window, m.Sliding, …).
from ..applications import models as _application_models          # noqa: E402

APPLICATION_MODELS = _application_models()
Application = Annotated[Union[APPLICATION_MODELS], Field(discriminator="kind")]
globals().update({cls.__name__: cls for cls in APPLICATION_MODELS})   # m.Window, m.Sliding …


# ---------------------------------------------------------------- kernel axes
class GhostHead(Component):
    """ELSA ghost head: F[c,k] = M[c,k]^lam · A[g,k] + gamma · S[c,k]. lam must be a
    non-negative integer (a fractional power of a signed parameter is NaN)."""

    kind: Literal["ghost_head"] = "ghost_head"
    lam: Int = Field(default=0, ge=0)
    gamma: Float = Field(default=1.0, ge=-1e6, le=1e6)


class Kernel(Component):
    """Kernel type (one weight per head, or per channel), kernel size (1×1 keys or K×K
    keys) and an optional expansion of head filters to channel filters."""

    type: Literal["standard", "depthwise"] = "standard"
    size: Int = Field(default=1, ge=1)
    expand: GhostHead | None = None


class KernelBank(Component):
    """keys: dynamic (projected from the input) or static (learned, one per offset);
    values: projected, keys (no value bank: depthwise self-attention) or input (x itself)."""

    keys: Literal["dynamic", "static"] = "dynamic"
    values: Literal["projected", "keys", "input"] = "projected"


class QKWidth(Component):
    """Width of q and k (`qk_width`: ELSA's 2/3, EfficientViT's key_dim) or of the values
    (`v_width`: EfficientFormer's and LeViT's attn_ratio): C // den · num, rounded up to a
    multiple."""

    kind: Literal["ratio"] = "ratio"
    num: Int = Field(ge=1)
    den: Int = Field(ge=1)
    multiple_of: Int = Field(default=1, ge=1)


class QKNorm(Component):
    """LayerNorm of each head's q and k vectors after the projection, before the logits
    (timm ViT's qk_norm; eps 1e-6 as timm's VisionTransformer builds it)."""

    kind: Literal["layernorm"] = "layernorm"
    eps: Float = Field(default=1e-6, ge=1e-12, le=1.0)


class Rope(Component):
    """Rotary position embedding of q and k (RoFormer, Su et al., 2021; 2-D axial as in
    EVA-02 and timm's RoPE ViTs): each head's q and k vectors are rotated pair by pair by
    angles of the token's grid position, so that q·k depends on the offset between the
    tokens. With d channels per head and b = d/4 bands f_i = temperature^(−i/b): the angles
    are [y·f_0 … y·f_{b−1}, x·f_0 … x·f_{b−1}] for the token at row y, column x (positions
    scaled by reference_grid / grid when given: EVA's ref_feat_shape). pairs: interleaved
    rotates channels (2i, 2i+1) by angle i; halves rotates (i, i + d/2). Class / register
    tokens before the grid are not rotated (EVA)."""

    kind: Literal["axial"] = "axial"
    temperature: Float = Field(default=10000.0, gt=1.0, le=1e12)
    reference_grid: tuple[Int, Int] | None = None
    pairs: Literal["interleaved", "halves"] = "interleaved"

    @field_validator("reference_grid")
    @classmethod
    def _positive(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"reference_grid must be two positive integers (rows, columns), "
                             f"got {list(value)}")
        return value


class QConv(Component):
    """A depthwise size×size conv (with bias) of the projected q map (EfficientViT's
    per-head `dws`, its BatchNorm folded in); scope map: zero-padded at the map's borders,
    block: each query block as its own zero-padded image (EfficientViT runs it per
    window)."""

    size: Int = Field(default=3, ge=1)
    scope: Literal["map", "block"] = "map"


class Projections(Component):
    """Input projections and the branch's output projection.

    layout names the fused input linears: qkv (one Linear to q,k,v), q_kv (q, and k,v
    together: needed when keys come from a pooled input), qk, qv, q, v, or none.
    qk_norm normalizes each head's q and k (timm ViT qk_norm).
    """

    layout: Literal["qkv", "q_kv", "qk", "qv", "q", "v", "none"] = "qkv"
    # no_key: q and v biases but none on k (Swin-V2's q_bias / v_bias; layout qkv)
    bias: Union[bool, Literal["no_key"]] = True
    out: bool = True
    out_bias: bool = True
    qk_width: QKWidth | None = None
    v_width: QKWidth | None = None     # values wider or narrower than the branch's channels
    qk_norm: QKNorm | None = None
    q_conv: QConv | None = None
    rope: Rope | None = None


class ValueConv(Component):
    """A depthwise size×size conv of the value map.

    scope: map    -- conv of the whole value map, added to the output (BOAT; CSWin's last
                     stage);
           block  -- conv of each query block's values as its own zero-padded image, added
                     to the output (CSWin's LePE inside a stripe);
           values -- v ← v + conv(v) on the key/value grid, before the aggregation
                     (Shunted's local conv on the pooled values).
    """

    size: Int = Field(default=3, ge=1)
    bias: bool = True
    scope: Literal["map", "block", "values"] = "map"


class Extras(Component):
    value_conv: ValueConv | None = None
    output_bias: bool = False
    residual: bool = False


class Dropout(Component):
    attention: Float = Field(default=0.0, ge=0, lt=1)
    projection: Float = Field(default=0.0, ge=0, lt=1)


class Peg(Component):
    """Conditional positional encoding: x ← x + DWConv_size(x) before attention."""

    kind: Literal["peg"] = "peg"
    size: Int = Field(default=3, ge=1)


PositionalEncoding = Annotated[Union[Peg], Field(discriminator="kind")]


# ---------------------------------------------------------------- branches and spec
class HeadFraction(Component):
    fraction: Float = Field(gt=0, le=1)
    rounding: Literal["floor", "ceil", "round"] = "floor"


BranchHeads = Union[Literal["rest"], Annotated[Int, Field(ge=0)], HeadFraction]

BRANCH_AXES = ("projections", "parameterization", "normalization", "application",
               "kernel", "kernel_bank", "extras", "dropout")


class Branch(Component):
    """One description of the paradigm, owning some of the heads."""

    name: str = Field(default=DEFAULT_BRANCH, pattern=r"^[a-z][a-z0-9_]*$")
    heads: BranchHeads = "rest"
    projections: Projections = Projections()
    parameterization: Parameterization
    normalization: Normalization
    application: Application
    kernel: Kernel = Kernel()
    kernel_bank: KernelBank = KernelBank()
    extras: Extras = Extras()
    dropout: Dropout = Dropout()

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name):
        return check_branch_name(name)


class Merge(Component):
    """How branches compose, then an optional activation and shared output projection.

    concat   -- each branch reads the input and owns its heads; outputs concatenated on
                channels (HiLo, Twins, CSWin, Shunted);
    sequence -- each branch owns all the heads and reads the previous branch's output
                (axial attention: rows, then columns);
    cascade  -- each branch reads its own channel slice of the input plus the previous
                branch's output, and projects from its own width (EfficientViT's cascaded
                group attention); outputs concatenated.
    activation is applied to the merged output before `out` (EfficientViT: ReLU; LeViT:
    Hardswish).
    """

    kind: Literal["concat", "sequence", "cascade"] = "concat"
    activation: Literal["none", "relu", "hardswish"] = "none"
    out: bool = False
    out_bias: bool = True


class Spec(Component):
    """A whole attention mechanism."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    paper: str = ""
    description: str = ""
    heads: Int | Literal["channels"] = Field(default=1)
    pad_to_multiple: Int | None = Field(default=None, ge=1)
    positional: tuple[PositionalEncoding, ...] = ()
    branches: tuple[Branch, ...] = Field(min_length=1)
    merge: Merge = Merge()

    @field_validator("heads")
    @classmethod
    def _positive_heads(cls, heads):
        if isinstance(heads, int) and heads < 1:
            raise ValueError("heads must be >= 1 or 'channels'")
        return heads

    @model_validator(mode="before")
    @classmethod
    def _hoist_single_branch(cls, data: Any):
        """A spec without `branches` is one branch written at the top level."""
        if isinstance(data, dict) and "branches" not in data:
            axes = {k: data[k] for k in BRANCH_AXES if k in data}
            if axes:
                rest = {k: v for k, v in data.items() if k not in BRANCH_AXES}
                rest["branches"] = [axes]
                return rest
        return data

    @field_validator("branches")
    @classmethod
    def _unique_branch_names(cls, branches):
        names = [b.name for b in branches]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"branch names must be unique, got {dupes} more than once")
        reserved = sorted(set(names) & RESERVED_NAMES)
        if reserved:
            raise ValueError(f"branch name(s) {reserved} are reserved for spec-level "
                             f"parameters; choose another name")
        return branches

    @property
    def single_branch(self) -> bool:
        return len(self.branches) == 1 and self.branches[0].name == DEFAULT_BRANCH \
            and self.branches[0].heads == "rest"
