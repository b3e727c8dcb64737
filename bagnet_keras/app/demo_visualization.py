"""The demo's feature-visualisation checks: stronger than the data, and the known answer of the motif classes.

Two claims, each measured on the demo's own models and stated with its numbers:

- *Stronger than the data.* The visualisation of each unit the atlas shows
  activates that unit at least as strongly as the unit's strongest dataset
  example (the atlas's top activation), for at least 90 % of the units.
- *Known answer.* The CNN's class-logit visualisation of each motif class
  contains that class's motif: its largest normalised cross-correlation
  with the generator's motif templates
  (`data_tools.synthetic.motif_template`), averaged over 8 visualisations
  from different starts, is with its own class's motif. That the model
  classifies its own visualisation as the class would prove nothing; the
  motif does. The scenes' disc class
  (`data_tools.synthetic.CONTROL_CLASSES`, the ring with its hole filled)
  is what makes the ring's hole the ring's only cue; it is not a motif of
  the table, because a filled disc and a filled triangle are both blobs
  that a template cannot tell apart in a visualisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from bagnet_keras.explain.atlas import activation_function, spatial_layers
from bagnet_keras.explain.objectives import class_logit, unit
from bagnet_keras.explain.visualization import feature_visualization
from bagnet_keras.report.findings import Finding


@dataclass
class UnitStrength:
    """Per unit of one layer: its visualisation's activation over its strongest dataset activation."""

    layer: str
    units: np.ndarray
    reached: np.ndarray
    data_best: np.ndarray
    images: np.ndarray  # the visualisations (U, H, W, 3), pixels 0..255

    @property
    def ratios(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.data_best > 0, self.reached / self.data_best, np.inf)


def unit_strength(
    model: keras.Model,
    atlas,
    layer: str,
    preprocess: Callable | None,
    max_units: int | None = None,
    steps: int = 256,
    seed: int = 0,
) -> UnitStrength:
    """Visualise each unit of ``atlas`` at ``layer`` (its first ``max_units``, those the atlas page shows) and
    measure it as the atlas measured the data: the unit's largest activation over the image's positions."""
    path = atlas.path(layer)
    units = np.asarray(atlas.units[path])[:max_units]
    found = feature_visualization(
        model, [unit(path, int(u)) for u in units], steps=steps, preprocess=preprocess, seed=seed, progress=False
    )
    images = found.images
    forward = activation_function(model, spatial_layers(model, [path]))
    acts = np.asarray(forward(np.asarray(preprocess(images.copy()) if preprocess else images, "float32"))[0])
    reached = acts.max(axis=(1, 2))[np.arange(len(units)), units]
    return UnitStrength(path, units, reached, np.asarray(atlas.values[path])[: len(units), 0], images)


def template_correlation(image: np.ndarray, template: np.ndarray) -> float:
    """The largest normalised cross-correlation of ``template`` anywhere in ``image`` (H, W, 3), in any colour
    channel, bright or dark (a motif is drawn lighter or darker than the clutter, channel by channel).

    Examples
    --------
    >>> from data_tools.synthetic import motif_template
    >>> canvas = np.full((32, 32, 3), 100.0)
    >>> canvas[10:23, 5:18, 1] += 80 * motif_template("ring")
    >>> round(template_correlation(canvas, motif_template("ring")), 3)
    1.0
    """
    import cv2

    best = -1.0
    t = template.astype("float32")
    for c in range(image.shape[-1]):
        score = cv2.matchTemplate(np.ascontiguousarray(image[..., c], dtype="float32"), t, cv2.TM_CCOEFF_NORMED)
        best = max(best, float(np.nanmax(np.abs(score))))
    return best


def motif_table(
    model: keras.Model,
    class_names: Sequence[str],
    preprocess: Callable | None,
    steps: int = 256,
    seed: int = 0,
    copies: int = 8,
) -> dict[str, dict[str, float]]:
    """``{class: {motif: correlation}}``: each motif class's logit visualisations against every motif template,
    the mean over ``copies`` visualisations from different starts. One visualisation is a noisy measure: on
    the demo's CNN the ring's template won on 6 of 8, and the three seeds of one each gave the ring 0.47,
    0.71 and 0.62 against the triangle's 0.62, 0.53 and 0.57."""
    from data_tools.synthetic import MOTIF_CLASSES, motif_template

    classes = [c for c in MOTIF_CLASSES if c in class_names]
    found = feature_visualization(
        model,
        [class_logit(list(class_names).index(c)) for c in classes],
        steps=steps,
        copies=copies,
        preprocess=preprocess,
        seed=seed,
        progress=False,
    )
    images = found.images.reshape(len(classes), copies, *found.images.shape[1:])
    return {
        c: {m: float(np.mean([template_correlation(x, motif_template(m)) for x in images[i]])) for m in MOTIF_CLASSES}
        for i, c in enumerate(classes)
    }


def strength_finding(name: str, strength: UnitStrength) -> Finding:
    """At least 90 % of the units' visualisations reach their strongest dataset activation."""
    ratios = strength.ratios
    share = float(np.mean(ratios >= 1))
    listing = ", ".join(f"{u}: {r:.2f}" for u, r in zip(strength.units.tolist(), ratios.tolist(), strict=True))
    return Finding(
        claim=f"The {name}'s unit visualisations excite their units at least as much as the best dataset example",
        holds=share >= 0.9,
        numbers=f"{share:.0%} of {len(ratios)} units of {strength.layer.split('/')[-1]} (ratio per unit: {listing})",
    )


def motif_finding(table: dict[str, dict[str, float]]) -> Finding:
    """Each motif class's visualisation correlates best with its own motif."""
    own = {c: max(row, key=row.get) == c for c, row in table.items()}
    listing = "; ".join(f"{c}: " + ", ".join(f"{m} {v:.2f}" for m, v in row.items()) for c, row in table.items())
    return Finding(
        claim="The CNN's class visualisation of each motif class contains that class's motif",
        holds=bool(own) and all(own.values()),
        numbers="largest normalised cross-correlation with each motif template, mean over each class's "
        f"visualisations: {listing}",
    )


@dataclass
class DemoVisualizations:
    """The demo's visualisations and their checks: per model its units' `UnitStrength`, the CNN's NMF groups'
    visualisations (G, H, W, 3) and the motif table (`motif_table`)."""

    strengths: dict
    groups: np.ndarray | None
    motifs: dict

    def findings(self) -> list[Finding]:
        found = [strength_finding(name, s) for name, s in self.strengths.items()]
        return found + ([motif_finding(self.motifs)] if self.motifs else [])

    def save(self, path: str) -> None:
        """Write the images and numbers to ``path`` (.npz, no pickle), through a temporary file."""
        import json

        from bagnet_keras.core.commit import atomic_target

        arrays = {"groups": self.groups if self.groups is not None else np.zeros((0, 1, 1, 3), "float32")}
        meta = {"motifs": self.motifs, "strengths": {}}
        for name, s in self.strengths.items():
            meta["strengths"][name] = s.layer
            for key in ("units", "reached", "data_best", "images"):
                arrays[f"{name}.{key}"] = getattr(s, key)
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_target(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> DemoVisualizations | None:
        """What `save` wrote, or None where there is no such file."""
        import json
        import os

        if not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            strengths = {
                name: UnitStrength(layer, *(stored[f"{name}.{k}"] for k in ("units", "reached", "data_best", "images")))
                for name, layer in meta["strengths"].items()
            }
            groups = stored["groups"] if len(stored["groups"]) else None
        return cls(strengths, groups, meta["motifs"])


def demo_visualizations(models: dict, entries: dict, class_names: Sequence[str], preprocess, steps: int = 128):
    """Visualise the atlas's shown units of both models, the CNN's NMF groups and its motif classes; put the
    images on the atlas entries (``visualizations``, ``group_visualizations``) and return them with their checks."""
    from bagnet_keras.explain.objectives import direction

    strengths = {}
    for name, entry in entries.items():
        layer = entry.atlas.layers[-1]
        strengths[name] = s = unit_strength(models[name], entry.atlas, layer, preprocess, max_units=12, steps=steps)
        entry.visualizations = {(layer, int(u)): image / 255.0 for u, image in zip(s.units, s.images, strict=True)}
    groups = entries["cnn"].groups
    images = feature_visualization(
        models["cnn"],
        [direction(groups.layer, component) for component in groups.components],
        steps=steps,
        preprocess=preprocess,
        progress=False,
    ).images
    entries["cnn"].group_visualizations = {g: image / 255.0 for g, image in enumerate(images)}
    return DemoVisualizations(strengths, images, motif_table(models["cnn"], class_names, preprocess, steps=steps))
