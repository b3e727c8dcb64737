"""What a feature visualisation maximises: objectives that add and scale, as in Lucid's objective algebra.

An `Objective` is a weighted sum of terms, each read from one pass of the
model: `channel` (a channel's mean over positions), `unit` (a channel at one
position), `direction` (a direction in a layer's activation space: an NMF
group of `bagnet_keras.explain.factorize`, a class concept's centroid, any
vector), `class_logit` (a class's logit, the softmax left out) and `diversity`
(Lucid's batch term: how alike the images optimised for the same objective
are, by their Gram matrices at a layer). Objectives add, subtract and scale::

    channel("conv3", 4) + 0.5 * class_logit(2) - 10 * diversity("conv3")

Every term but diversity is linear in a layer's activations (or the logits),
so `linear_weights` turns it into one weight array per layer, and a batch of
objectives is evaluated in one pass as a dot product per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bagnet_keras.core.validation import check_int, check_number


@dataclass(frozen=True)
class Term:
    """One term of an objective: ``kind`` is "channel", "unit", "direction", "logit" or "diversity"."""

    kind: str
    layer: str | None = None
    index: int | None = None
    vector: tuple | None = None
    position: tuple | None = None
    output: int | str | None = None

    def __str__(self) -> str:
        if self.kind == "logit":
            return f"class_logit({self.index}{'' if self.output is None else f', output={self.output!r}'})"
        if self.kind == "direction":
            where = "" if self.position is None else f", position={self.position}"
            return f"direction({self.layer!r}, <{len(self.vector)} values>{where})"
        if self.kind == "unit":
            return f"unit({self.layer!r}, {self.index}{'' if self.position is None else f', {self.position}'})"
        if self.kind == "diversity":
            return f"diversity({self.layer!r})"
        return f"channel({self.layer!r}, {self.index})"


class Objective:
    """A weighted sum of terms (build one with `channel`, `unit`, `direction`, `class_logit`, `diversity`).

    Examples
    --------
    >>> objective = channel("conv", 3) - 2 * diversity("conv")
    >>> str(objective)
    "channel('conv', 3) - 2 * diversity('conv')"
    >>> str(sum([channel("conv", 0), channel("conv", 1)]))
    "channel('conv', 0) + channel('conv', 1)"
    """

    def __init__(self, terms: tuple[tuple[float, Term], ...]):
        self.terms = tuple(terms)

    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum() starts from 0
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    __radd__ = __add__

    def __mul__(self, factor):
        if isinstance(factor, Objective):
            return NotImplemented
        factor = check_number(factor, "factor")
        return Objective(tuple((factor * w, t) for w, t in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        divisor = check_number(divisor, "divisor")
        if divisor == 0:
            raise ValueError("An objective cannot be divided by 0.")
        return self * (1.0 / divisor)

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __str__(self) -> str:
        text = ""
        for w, term in self.terms:
            sign = " - " if w < 0 else " + "
            magnitude = abs(w)
            piece = str(term) if magnitude == 1 else f"{magnitude:g} * {term}"
            text = (("-" if w < 0 else "") + piece) if not text else text + sign + piece
        return text

    __repr__ = __str__

    def layers(self) -> list[str]:
        """The layers the objective reads, in first-use order."""
        return list(dict.fromkeys(t.layer for _, t in self.terms if t.layer is not None))

    def outputs(self) -> list:
        """The model outputs (heads) whose logits the objective reads."""
        return list(dict.fromkeys(t.output for _, t in self.terms if t.kind == "logit"))


def channel(layer: str, unit: int) -> Objective:
    """A channel of ``layer``: its mean activation over all positions (Lucid's ``channel``).

    Examples
    --------
    >>> channel("conv3_relu", 5).terms[0][1].kind
    'channel'
    """
    return Objective(((1.0, Term("channel", _layer(layer), check_int(unit, "unit", low=0))),))


def unit(layer: str, unit: int, position: tuple[int, int] | None = None) -> Objective:
    """One channel of ``layer`` at one position ``(row, column)`` of its grid; None: the grid's centre.

    Examples
    --------
    >>> str(unit("conv3_relu", 5, (2, 3)))
    "unit('conv3_relu', 5, (2, 3))"
    """
    return Objective(((1.0, Term("unit", _layer(layer), check_int(unit, "unit", low=0), None, _position(position))),))


def direction(layer: str, vector, position: tuple[int, int] | None = None) -> Objective:
    """A direction in ``layer``'s activation space: the dot product with ``vector`` (scaled to length 1).

    Averaged over positions, or at one ``position``. An NMF group's direction is its row of
    `LayerGroups.components`.

    Examples
    --------
    >>> [float(v) for v in direction("conv", [3.0, 4.0]).terms[0][1].vector]
    [0.6, 0.8]
    """
    v = np.asarray(vector, dtype="float64").reshape(-1)
    norm = float(np.linalg.norm(v)) if v.size else 0.0
    if not v.size or not np.all(np.isfinite(v)) or norm == 0:
        raise ValueError(f"`vector` must be a non-zero, finite vector of the layer's channels. Received: {vector!r}")
    return Objective(((1.0, Term("direction", _layer(layer), None, tuple(v / norm), _position(position))),))


def class_logit(class_index: int, output: int | str | None = None) -> Objective:
    """The logit of class ``class_index`` of output ``output`` (the model's softmax left out).

    Examples
    --------
    >>> str(class_logit(2))
    'class_logit(2)'
    """
    return Objective(((1.0, Term("logit", None, check_int(class_index, "class_index", low=0), output=output)),))


def diversity(layer: str) -> Objective:
    """Lucid's diversity: the mean cosine similarity of an image's Gram matrix at ``layer`` with those of the other
    images optimised for the same objective (``copies``); subtract it to make them differ.

    Examples
    --------
    >>> str(channel("c", 1) - 100 * diversity("c"))
    "channel('c', 1) - 100 * diversity('c')"
    """
    return Objective(
        (
            (
                1.0,
                Term("diversity", _layer(layer)),
            ),
        )
    )


def _layer(layer) -> str:
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"`layer` must be a layer name (str). Received: layer={layer!r}")
    return layer


def _position(position) -> tuple[int, int] | None:
    if position is None:
        return None
    try:
        row, column = position
    except (TypeError, ValueError):
        raise ValueError(f"`position` must be (row, column) on the layer's grid. Received: {position!r}") from None
    return check_int(row, "row", low=0), check_int(column, "column", low=0)


def linear_weights(
    objective: Objective, shapes: Mapping[str, tuple], n_classes: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, float]]:
    """The objective as weights: ``{layer: (h, w, C)}`` for its activations, ``(K,)`` for the logits, and its
    diversity weight per layer; its value is ``sum(weights * activations) + logit_weights @ logits + ...``.

    ``shapes`` maps each layer the objective reads to its activations' ``(h, w, C)``.

    Examples
    --------
    >>> weights, logits, _ = linear_weights(channel("c", 1) + 2 * unit("c", 0, (0, 1)), {"c": (2, 2, 3)}, None)
    >>> weights["c"][..., 1].tolist(), float(weights["c"][0, 1, 0])
    ([[0.25, 0.25], [0.25, 0.25]], 2.0)
    """
    weights = {layer: np.zeros(shapes[layer], "float32") for layer in objective.layers() if layer in shapes}
    logits = None
    spread = {}
    for w, term in objective.terms:
        if term.kind == "logit":
            if n_classes is None or term.index >= n_classes:
                raise ValueError(f"{term} names class {term.index}; the output has {n_classes} classes.")
            logits = np.zeros(n_classes, "float32") if logits is None else logits
            logits[term.index] += w
        elif term.kind == "diversity":
            spread[term.layer] = spread.get(term.layer, 0.0) + w
        else:
            _add_linear(weights[term.layer], w, term)
    return weights, logits, spread


def _add_linear(target: np.ndarray, w: float, term: Term) -> None:
    h, width, c = target.shape
    if term.kind in ("channel", "unit") and term.index >= c:
        raise ValueError(f"{term}: layer {term.layer!r} has {c} channels (0..{c - 1}).")
    if term.kind == "direction" and len(term.vector) != c:
        raise ValueError(f"{term}: the vector has {len(term.vector)} values; layer {term.layer!r} has {c} channels.")
    values = np.zeros(c, "float32")
    if term.kind == "direction":
        values[:] = term.vector
    else:
        values[term.index] = 1.0
    position = term.position if term.kind != "channel" else None
    if term.kind == "unit" and position is None:
        position = (h // 2, width // 2)
    if position is None:
        target += w * values / (h * width)
        return
    row, column = position
    if row >= h or column >= width:
        raise ValueError(f"{term}: position {position} is outside layer {term.layer!r}'s {h}x{width} grid.")
    target[row, column] += w * values
