"""How units develop during training: Zeiler & Fergus' feature evolution (their Fig. 4), as a Keras callback."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from bagnet_keras.explain.atlas import feature_atlas


class FeatureEvolution(keras.callbacks.Callback):
    """At chosen epochs, records each fixed unit's strongest activation over ``data`` and its projection.

    Parameters
    ----------
    data : array or re-iterable dataset
        A fixed set of images (a validation sample), as for `bagnet_keras.explain.atlas.feature_atlas`;
        read twice at each recorded epoch (the atlas, then the crops and projections).
    layer : str
        A layer with a spatial output.
    units : sequence of int
        The channels followed.
    epochs : sequence of int
        1-based epochs after which to record (Zeiler & Fergus: 1, 2, 5, 10, 20, 30, 40, 64).
    mode : {"guided", "deconvnet"}
        The projection's ReLU rule.
    batch_size : int
    preprocess : callable, optional

    Attributes
    ----------
    records : list of dict
        ``epoch``, ``unit``, ``image``, ``row``, ``column``, ``activation``, ``crop`` and ``projection``
        (the receptive field's pixels and the projection there); `bagnet_keras.report.plot.plot_evolution`
        draws them.

    Examples
    --------
    >>> evolution = FeatureEvolution(x_val[:200], "conv5_relu", units=[3, 7, 12], epochs=[1, 5, 20])  # doctest: +SKIP
    >>> model.fit(train, epochs=20, callbacks=[evolution])  # doctest: +SKIP
    >>> plot_evolution(evolution.records)  # doctest: +SKIP
    """

    def __init__(
        self,
        data,
        layer: str,
        units: Sequence[int],
        *,
        epochs: Sequence[int] = (1, 2, 5, 10, 20, 30, 40, 64),
        mode: str = "guided",
        batch_size: int = 32,
        preprocess: Callable | None = None,
    ):
        super().__init__()
        units = [int(u) for u in units]
        epochs = sorted({int(e) for e in epochs})
        if not units:
            raise ValueError("`units` names no unit to follow; give e.g. units=[0, 5].")
        if not epochs or epochs[0] < 1:
            raise ValueError(f"`epochs` must be 1-based epoch numbers. Received: {epochs}")
        if mode not in ("guided", "deconvnet"):
            raise ValueError(f"`mode` must be 'guided' or 'deconvnet'. Received: mode={mode!r}")
        self.data, self.layer, self.units, self.epochs = data, layer, units, epochs
        self.mode, self.batch_size, self.preprocess = mode, batch_size, preprocess
        self.records: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        atlas = feature_atlas(
            self.model,
            self.data,
            [self.layer],
            units={self.layer: self.units},
            k=1,
            batch_size=self.batch_size,
            preprocess=self.preprocess,
            progress=False,
        )
        for unit in self.units:
            ((image, row, column, value),) = atlas.top(self.layer, unit)
            crops, projections = atlas.examples(
                self.data, self.layer, unit, mode=self.mode, preprocess=self.preprocess, batch_size=self.batch_size
            )
            self.records.append(
                {
                    "epoch": epoch + 1,
                    "unit": unit,
                    "image": image,
                    "row": row,
                    "column": column,
                    "activation": value,
                    "crop": crops[0],
                    "projection": projections[0],
                }
            )
