"""One run's resolved configuration: the model and train sections, their checks, and the
run id that hashes them.

Named references (data, init, recurrent_init, bias_init, first_init, readout_init,
activation, optimizer) resolve as :mod:`initbench.config.refs` says.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from initbench.config.architectures import ARCHITECTURES, is_recurrent
from initbench.config.geometry import MLP_INPUTS, cnn_positions
from initbench.config.problems import shown
from initbench.config.refs import (
    ActivationRef,
    DatasetRef,
    InitRef,
    OptimizerRef,
    RefOf,
    _check_arch,
)
from initbench.config.registry import ADDED, is_added

RUN_ID_LENGTH = 12


# --- the resolved configuration of one run -----------------------------------------------------


def _doc(text: str) -> Any:
    """A spec key's meaning, for the generated docs (docs/definitions.md)."""
    return Field(description=text)


_STRICT = ConfigDict(
    extra="forbid", frozen=True, strict=True, allow_inf_nan=False, validate_default=True
)
PositiveInt = Annotated[int, Field(ge=1)]


# --- model.widths, model.norm, model.residual: their validation ---------------------------

WIDTH_DEFAULT: Final = 256  # model.width's default
BRANCH_SCALES: Final = ("1/sqrt(L)", "skipinit", "fixup")  # residual's named branch scalings


def _added(text: str) -> Any:
    """A key added after run ids were pinned (registry.ADDED), with its meaning."""
    return Field(description=text, json_schema_extra=ADDED)


def _list_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _located(code: str, message: str, key: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{msg}", {"msg": message, "subloc": key})


def _depth_from_widths(values: Any) -> Any:
    """With ``widths``, depth is their number (a depth given must agree) and a width given
    must be every layer's."""
    if not isinstance(values, Mapping) or values.get("widths") is None:
        return values
    widths = values["widths"]
    if not isinstance(widths, list | tuple) or not widths:
        return values  # the field's own validation says what is wrong
    depth = values.get("depth", len(widths))
    if depth != len(widths):
        raise _located(
            "widths_depth",
            f"depth {shown(depth)} contradicts the {len(widths)} layers of widths "
            f"{shown(list(widths))}: give one of them, or make them agree",
            "depth",
        )
    # width is unused with widths; at its default (as a resolved config stores it) it says
    # nothing, any other value must be every layer's
    width = values.get("width", WIDTH_DEFAULT)
    if width != WIDTH_DEFAULT and any(w != width for w in widths):
        raise _located(
            "widths_width",
            f"width {shown(width)} contradicts widths {shown(list(widths))}: give one of them",
            "width",
        )
    return {**values, "depth": len(widths)}


def norm_of(model: Mapping[str, Any]) -> str:
    """none, batch or layer: a model section's ``norm``, else what ``batchnorm`` says."""
    norm = model.get("norm")
    return str(norm) if norm is not None else ("batch" if model.get("batchnorm") else "none")


def input_init(model: Mapping[str, Any], layer: int) -> tuple[str, Any]:
    """(key, reference) that initialises watched layer ``layer``'s (input) weight in a
    model section: ``first_init`` for layer 1 where it is set, else ``init``."""
    key = "first_init" if layer == 1 and model.get("first_init") else "init"
    return key, model.get(key)


def layer_widths(model: Mapping[str, Any]) -> list[int]:
    """Each watched layer's units (channels) of a model section: ``widths``, or ``width``
    ``depth`` times."""
    widths = model.get("widths")
    return list(widths) if widths is not None else [int(model["width"])] * int(model["depth"])


def _check_norm(model: ModelConfig) -> None:
    if model.batchnorm and model.norm not in (None, "batch"):
        raise _located(
            "norm_batchnorm",
            f"norm {model.norm!r} contradicts batchnorm: true (its shorthand for norm: "
            "batch): give one of them",
            "norm",
        )
    arch, recurrent = model.arch, is_recurrent(model.arch)
    if recurrent and model.normalization == "batch":
        if model.norm is None:
            message = f"batchnorm is not available for arch {arch} (set model.batchnorm: false)"
        else:
            message = f"norm batch is not available for arch {arch} (norm layer is, for rnn)"
        raise _located("rnn_batchnorm", message, "norm" if model.norm else "batchnorm")
    if ARCHITECTURES.get(arch).gates and model.normalization != "none":
        message = f"norm {model.normalization} is not built for arch {arch} (rnn has norm layer)"
        raise _located("gated_norm", message, "norm")
    if recurrent and model.widths is not None:
        raise _located("rnn_widths", "widths apply to arch mlp and cnn only", "widths")


def _check_residual(model: ModelConfig) -> None:
    alpha = model.residual
    if alpha is None:
        if model.branch_layers != 2:
            raise _located(
                "not_residual", "branch_layers applies only with model.residual", "branch_layers"
            )
        return
    if is_recurrent(model.arch):
        raise _located("rnn_residual", "residual blocks apply to arch mlp and cnn", "residual")
    if model.widths is not None and len(set(model.widths)) > 1:
        raise _located("residual_widths", "a residual stream keeps one width", "widths")
    if isinstance(alpha, str) and alpha not in BRANCH_SCALES:
        raise _located(
            "residual",
            f"residual {shown(alpha)} is not a number or one of {', '.join(BRANCH_SCALES)}",
            "residual",
        )
    if not isinstance(alpha, str) and not alpha > 0:
        raise _located("residual", f"residual alpha must be > 0, got {alpha}", "residual")
    if alpha == "fixup" and model.branch_layers < 2:
        raise _located(
            "fixup_one_layer",
            "fixup needs branch_layers >= 2: it zeroes the branch's last layer and scales the "
            "others by L^(-1/(2m-2)), which for m = 1 leaves no layer to scale and divides by 0",
            "residual",
        )


class ModelConfig(BaseModel):
    """Architecture, size, activation, normalisation and initialisation of the network."""

    model_config = _STRICT

    arch: Annotated[str, BeforeValidator(_check_arch), _doc("mlp, cnn, rnn, lstm or gru")] = "mlp"
    depth: Annotated[int, Field(ge=1, le=1000), _doc("hidden layers (rnn: stacked layers)")] = 5
    width: Annotated[
        int, Field(ge=1, le=16384), _doc("units (mlp), channels (cnn), hidden size (rnn)")
    ] = WIDTH_DEFAULT
    activation: Annotated[
        ActivationRef | None,
        _doc("see initbench list activations; none: relu, tanh for rnn (lstm, gru: tanh only)"),
    ] = None
    batchnorm: Annotated[bool, _doc("BatchNorm after each affine map (mlp, cnn)")] = False
    init: Annotated[InitRef, _doc("initializer of every weight but those set per role below")] = (
        "torch_default"
    )
    recurrent_init: Annotated[
        InitRef | None,
        _doc("rnn, lstm, gru: hidden-to-hidden weights (per gate block); none: same as init"),
    ] = None
    bias_init: Annotated[InitRef, _doc("biases (zeros, constant, normal, uniform, ...)")] = "zeros"
    # --- per-layer widths, normalisation and residual blocks ----------------------------
    widths: Annotated[
        Annotated[tuple[Annotated[int, Field(ge=1, le=16384)], ...], Field(min_length=1)] | None,
        BeforeValidator(_list_as_tuple),
        _added(
            "mlp, cnn: units (channels) of each hidden layer, replacing width; depth "
            "defaults to their number; none: width in every layer"
        ),
    ] = None
    norm: Annotated[
        Literal["none", "batch", "layer"] | None,
        _added(
            "none, batch (BatchNorm; batchnorm: true is its shorthand) or layer "
            "(LayerNorm over each example's units, channels and positions; rnn: of the "
            "recurrent pre-activation); none: as batchnorm says"
        ),
    ] = None
    residual: Annotated[
        float | str | None,
        _added(
            f"mlp, cnn: depth residual blocks h + alpha F(h) (pre-activation; a cnn block "
            f"of stride 2 has a watched 1x1 conv shortcut), alpha one of a number, "
            f"{', '.join(repr(s) for s in BRANCH_SCALES)}; none: a plain net"
        ),
    ] = None
    branch_layers: Annotated[
        int, Field(ge=1, le=2), _added("residual only: watched layers per branch (1 or 2)")
    ] = 2

    @model_validator(mode="before")
    @classmethod
    def _fill_depth(cls, values: Any) -> Any:
        return _depth_from_widths(values)

    # per-role inits (#20), added after run ids were pinned: at None the run id is unchanged
    first_init: Annotated[
        InitRef | None,
        Field(json_schema_extra=ADDED),
        _doc("first watched layer's weight (rnn: layer 1's input-to-hidden); none: init"),
    ] = None
    readout_init: Annotated[
        InitRef | None,
        Field(json_schema_extra=ADDED),
        _doc("the linear readout's weight; none: init"),
    ] = None

    forget_bias: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="lstm only: added to the forget gate's bias after bias_init (0 as torch; "
        "1 as Gers et al. 2000, Jozefowicz et al. 2015, Keras' unit_forget_bias)",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _per_arch(self) -> ModelConfig:
        _check_norm(self)
        _check_residual(self)
        if not is_recurrent(self.arch) and self.recurrent_init is not None:
            raise PydanticCustomError(
                "not_rnn",
                "recurrent_init applies only to arch rnn, lstm or gru (this is {arch})",
                {"arch": self.arch, "subloc": "recurrent_init"},
            )
        _check_gated(self)
        return self

    @property
    def normalization(self) -> str:
        """none, batch or layer: ``norm``, or where that is None what ``batchnorm`` says."""
        return norm_of(self.model_dump())

    def layer_widths(self) -> list[int]:
        """Each watched layer's units (channels): ``widths``, or ``width`` depth times."""
        return layer_widths(self.model_dump())

    def resolved(self) -> ModelConfig:
        """Copy with per-architecture defaults filled in."""
        recurrent = is_recurrent(self.arch)
        activation = self.activation or {"name": "tanh" if recurrent else "relu"}
        recurrent_ref = self.recurrent_init or (self.init if recurrent else None)
        return self.model_copy(update={"activation": activation, "recurrent_init": recurrent_ref})


def _check_gated(model: ModelConfig) -> None:
    """forget_bias is the LSTM's; a gated cell's activations are its own (tanh)."""
    if model.forget_bias != 0.0 and model.arch != "lstm":
        raise PydanticCustomError(
            "not_lstm",
            "forget_bias applies only to arch lstm (this is {arch})",
            {"arch": model.arch, "subloc": "forget_bias"},
        )
    if ARCHITECTURES.get(model.arch).gates and model.activation not in (None, {"name": "tanh"}):
        raise PydanticCustomError(
            "gated_activation",
            "arch {arch} has its own activations (sigmoid gates, tanh); leave "
            "model.activation unset or tanh",
            {"arch": model.arch, "subloc": "activation"},
        )


class TrainConfig(BaseModel):
    """Optimizer and schedule of the training loop."""

    model_config = _STRICT

    optimizer: Annotated[OptimizerRef, _doc("sgd (momentum, nesterov) or adam")] = "sgd"
    lr: Annotated[float, Field(gt=0, le=1e6), _doc("learning rate")] = 0.01
    weight_decay: Annotated[float, Field(ge=0), _doc("L2 weight decay")] = 0.0
    batch_size: Annotated[
        int,
        Field(ge=1, le=1_000_000),
        _doc("examples per step; a fresh seeded permutation per epoch, last partial dropped"),
    ] = 128
    steps: Annotated[
        int,
        Field(ge=0, le=10_000_000),
        _doc("optimizer updates; 0: an init-only run (step 0 measured, no update, no test pass)"),
    ] = 200
    log_every: Annotated[PositiveInt, _doc("probe interval, plus step 0 and the last step")] = 10
    eval_every: Annotated[
        int, Field(ge=0), _doc("test-set evaluation interval; 0: only at the end")
    ] = 0
    # --- input-output Jacobian spectra (initbench.measure.jacobian) ---
    jacobian: Annotated[
        bool,
        Field(json_schema_extra=ADDED),
        _doc(
            "record the singular values of the input-output Jacobian d act_L / d x at step 0 "
            "(see jacobian_every) for jacobian_examples examples of the batch; mlp, cnn, rnn "
            "without batchnorm"
        ),
    ] = False
    jacobian_examples: Annotated[
        int,
        Field(ge=1, le=64, json_schema_extra=ADDED),
        _doc("examples of the step's batch (its first ones) whose Jacobian is taken"),
    ] = 4
    jacobian_every: Annotated[
        int,
        Field(ge=0, json_schema_extra=ADDED),
        _doc("also take the Jacobian every this many steps and at the last; 0: step 0 only"),
    ] = 0
    per_example: Annotated[
        bool,
        Field(json_schema_extra=ADDED),
        _doc(
            "also record, at probed steps, the mean and variance over the batch's examples "
            "of ln(q / q_in) of each watched preact and act (initbench list metrics: *_lnq_*)"
        ),
    ] = False
    clip_grad_norm: float = Field(
        0.0,
        ge=0,
        description="clip the global L2 norm of all gradients to this before each update "
        "(torch.nn.utils.clip_grad_norm_); 0: off",
        json_schema_extra=ADDED,
    )


class RunConfig(BaseModel):
    """Everything that determines one run's numbers; its hash is the run id."""

    model_config = _STRICT

    seed: Annotated[int, Field(ge=0, le=2**63 - 1)]
    data: DatasetRef
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check_jacobian(self) -> RunConfig:
        check_jacobian(self.model, self.train)
        return self

    @model_validator(mode="after")
    def _sequence_needs_a_recurrent_model(self) -> RunConfig:
        sequence = self.data.get("sequence", "rows")
        if sequence != "rows" and not is_recurrent(self.model.arch):
            raise PydanticCustomError(
                "not_recurrent",
                "data.sequence {sequence} applies only to arch rnn, lstm or gru (this is "
                "{arch}, which reads the whole image)",
                {"sequence": sequence, "arch": self.model.arch, "subloc": "data.sequence"},
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of the resolved config, less every key added after
        run ids were pinned (:data:`~initbench.config.registry.ADDED`) that is at its
        default: a run's config.json reads as it did before the key existed (readers take
        an absent added key as its default)."""
        return _without_added_defaults(type(self), self.model_dump(mode="json"))

    def identity(self) -> dict[str, Any]:
        """The resolved config that the run id hashes (:meth:`as_dict`), so that stored
        runs keep their ids when a key is added."""
        return self.as_dict()

    @property
    def run_id(self) -> str:
        """Stable hash of the resolved config: same config, same id."""
        return run_id_of(self.identity())


# --- input-output Jacobian spectra: what the exact computation can take -------------------

# Elements of one example's Jacobian (outputs x 784 inputs) the exact computation may hold:
# 2^23 float32 (32 MiB), e.g. a cnn's last layer of 8 channels at full 28 x 28 resolution.
JACOBIAN_MAX_ELEMENTS = 2**23


def jacobian_outputs(arch: str, depth: int, width: int) -> int:
    """Units of the last watched layer's act (a residual net's: the last block's stream)
    that the Jacobian differentiates: its width (mlp; rnn: its last time step), width x
    positions of the last conv's map (cnn)."""
    return width * cnn_positions(depth)[-1] if arch == "cnn" else width


def check_jacobian(model: ModelConfig, train: TrainConfig) -> None:
    """Refuse a Jacobian the exact computation cannot give: with batchnorm the batch's
    statistics couple the examples, so one example's Jacobian is not defined apart from
    the batch; over JACOBIAN_MAX_ELEMENTS per example it would not fit."""
    if not train.jacobian:
        if train.jacobian_every:
            raise PydanticCustomError(
                "jacobian_off",
                "train.jacobian_every is set but train.jacobian is false",
                {"subloc": "train.jacobian_every"},
            )
        return
    if model.normalization == "batch":
        raise PydanticCustomError(
            "jacobian_batchnorm",
            "train.jacobian needs model.batchnorm false: batch statistics couple the "
            "examples, so one example's input-output Jacobian is not defined apart from its batch",
            {"subloc": "train.jacobian"},
        )
    elements = jacobian_outputs(model.arch, model.depth, model.layer_widths()[-1]) * MLP_INPUTS
    if elements > JACOBIAN_MAX_ELEMENTS:
        raise PydanticCustomError(
            "jacobian_size",
            "train.jacobian: the Jacobian of one example would have {n} elements (outputs x "
            "784 inputs), over the {limit} the exact computation takes; use a narrower layer",
            {"n": elements, "limit": JACOBIAN_MAX_ELEMENTS, "subloc": "train.jacobian"},
        )
    if train.jacobian_examples > train.batch_size:
        raise PydanticCustomError(
            "jacobian_examples",
            "train.jacobian_examples ({k}) exceeds train.batch_size ({b})",
            {
                "k": train.jacobian_examples,
                "b": train.batch_size,
                "subloc": "train.jacobian_examples",
            },
        )


def _without_added_defaults(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    kept = dict(values)
    for name, info in model.model_fields.items():
        if name not in kept:
            continue
        if is_added(info) and kept[name] == info.get_default(call_default_factory=True):
            del kept[name]
            continue
        value = kept[name]
        ref = _ref_of(info)
        if ref is not None and isinstance(value, dict) and value.get("name") in ref.registry:
            params = ref.registry.get(value["name"]).params
            kept[name] = _without_added_defaults(params, value)
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            kept[name] = _without_added_defaults(info.annotation, value)
    return kept


def _ref_of(info: FieldInfo) -> RefOf | None:
    """The RefOf of a named-reference field, an optional one's (``InitRef | None``) too."""
    inner = [getattr(arg, "__metadata__", ()) for arg in typing.get_args(info.annotation)]
    return next((m for m in [*info.metadata, *sum(inner, ())] if isinstance(m, RefOf)), None)


def run_id_of(config: Mapping[str, Any]) -> str:
    """First RUN_ID_LENGTH hex digits of sha256 over the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_LENGTH]
