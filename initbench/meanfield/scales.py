"""The fixed point and depth scales of one (activation, sigma_w^2, sigma_b^2): what
``initbench theory`` prints without ``--depth``. sigma_w^2 is given, or read off an
initializer reference (the spec's syntax) as fan_in Var(W) of a hidden mlp layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from initbench.meanfield.activations import numpy_activation
from initbench.meanfield.fixedpoint import FixedPoint, fixed_point
from initbench.meanfield.geometry import geometry_of
from initbench.meanfield.model import TheoryError, split_ref

Ref = str | Mapping[str, Any]

# Two square hidden layers: an initializer whose fan_in Var(W) differs between them
# depends on the width (a fixed-std normal: width std^2); a fan-scaled one does not.
WIDTH_PROBES = (64, 4096)
AGREE_RTOL = 1e-9  # --sigma-w2 and --init agree within this


@dataclass(frozen=True)
class DepthScales:
    """The fixed point (q*, chi_1, c*, chi_c, xi_q, xi_c, phase) of ``activation`` at
    ``sigma_w2`` and ``sigma_b2``; ``source`` says where sigma_w^2 came from."""

    activation: Ref
    sigma_w2: float
    sigma_b2: float
    source: str
    fixed: FixedPoint

    def summary(self) -> dict[str, Any]:
        """Inputs and results by name (``regime`` is the phase)."""
        head = {"activation": split_ref(self.activation)[0], "sigma_w2": self.sigma_w2}
        head.update(sigma_b2=self.sigma_b2, sigma_w2_from=self.source)
        return {**head, **self.fixed.summary()}


def parse_reference(
    text: str | Mapping[str, Any], params: Sequence[str] = (), option: str = "--init"
) -> Ref:
    """A named reference as a spec writes it, ``normal`` or ``{name: normal, std: 0.1}``
    (YAML), with ``key=value`` parameters (values YAML) added; SpecError at ``option``
    where malformed."""
    from initbench.config.problems import Problem, SpecError
    from initbench.config.yamlfile import load_checked

    ref = load_checked(text, option)[0] if isinstance(text, str) else dict(text)
    if not isinstance(ref, str | Mapping) or (isinstance(ref, Mapping) and "name" not in ref):
        message = f"expected a name or {{name: ...}}, got {ref!r}"
        raise SpecError(option, [Problem(option.lstrip("-"), message)])
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError("--param", [Problem(item, "expected KEY=VALUE, e.g. std=0.1")])
        value = load_checked(raw, "--param", key.strip())[0]
        ref = {**({"name": ref} if isinstance(ref, str) else ref), key.strip(): value}
    return ref


def scaling_init(sigma_w2: float) -> dict[str, Any]:
    """The initializer with fan_in Var(W) = sigma_w^2 at every layer: variance_scaling."""
    return {"name": "variance_scaling", "scale": sigma_w2, "mode": "fan_in"}


def _hidden_sigma2(init: Ref, width: int) -> float:
    model = {"arch": "mlp", "depth": 2, "width": width, "init": init}
    geo = geometry_of(model, padding_correction=True)
    if isinstance(geo, str):
        raise TheoryError(geo)
    return geo.hidden_sigma2


def init_sigma_w2(init: Ref, width: int | None = None) -> tuple[float, str]:
    """(sigma_w^2, where it came from) of a hidden mlp layer ``init`` initialises: fan_in
    Var(W), the same at every width for a fan-scaled initializer; else ``width`` is needed."""
    from pydantic import ValidationError

    from initbench.config.registry import UnknownNameError

    name = split_ref(init)[0]
    try:
        probes = [_hidden_sigma2(init, w) for w in WIDTH_PROBES]
        if abs(probes[0] - probes[1]) <= AGREE_RTOL * abs(probes[1]):
            return probes[0], f"fan_in Var(W) of {name}, the same at every width"
        if width is None:
            raise TheoryError(
                f"init {name}: sigma_w^2 = fan_in Var(W) depends on the width "
                f"({probes[0]:.4g} at {WIDTH_PROBES[0]}, {probes[1]:.4g} at {WIDTH_PROBES[1]}): "
                "give the width (--width)"
            )
        return _hidden_sigma2(init, width), f"fan_in Var(W) of {name} at width {width}"
    except UnknownNameError as exc:
        raise TheoryError(f"init: {exc.message}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TheoryError(f"init {name}: {problems}") from None


def resolve_sigma_w2(
    init: Ref | None, sigma_w2: float | None, width: int | None
) -> tuple[float, str]:
    """sigma_w^2 from ``init`` or given; both: they must agree (within AGREE_RTOL)."""
    if init is None and sigma_w2 is None:
        raise TheoryError("give an initializer (--init) or sigma_w^2 (--sigma-w2)")
    if sigma_w2 is not None and not sigma_w2 > 0:
        raise TheoryError(f"sigma_w2 must be > 0, got {sigma_w2}")
    if init is None:
        return float(sigma_w2), "given"  # type: ignore[arg-type]
    value, source = init_sigma_w2(init, width)
    if sigma_w2 is not None and abs(value - sigma_w2) > AGREE_RTOL * value:
        raise TheoryError(
            f"sigma_w2 = {sigma_w2:.6g} contradicts init {split_ref(init)[0]}, whose "
            f"sigma_w^2 is {value:.6g} ({source}): give one of them"
        )
    return value, source


def depth_scales(
    activation: Ref,
    *,
    init: Ref | None = None,
    sigma_w2: float | None = None,
    sigma_b2: float = 0.0,
    width: int | None = None,
) -> DepthScales:
    """The fixed point and depth scales (Schoenholz et al. 2017) of ``activation`` with
    sigma_w^2 given or from ``init`` (a name or ``{name, **params}``; ``width`` where its
    sigma_w^2 depends on it) and sigma_b^2; TheoryError for a bad or contradictory input."""
    from initbench.config.registry import UnknownNameError

    if not sigma_b2 >= 0:
        raise TheoryError(f"sigma_b2 must be >= 0, got {sigma_b2}")
    if width is not None and width < 1:
        raise TheoryError(f"width must be >= 1, got {width}")
    value, source = resolve_sigma_w2(init, sigma_w2, width)
    try:
        act = numpy_activation(*split_ref(activation))
    except UnknownNameError as exc:
        raise TheoryError(f"activation: {exc.message}") from None
    return DepthScales(
        activation, value, float(sigma_b2), source, fixed_point(act, value, sigma_b2)
    )
