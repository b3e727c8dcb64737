"""Feature evolution during training (issue 11, Zeiler & Fergus Fig. 4)."""

import keras
import numpy as np
import pytest

from bagnet_keras.explain.atlas import feature_atlas
from bagnet_keras.explain.evolution import FeatureEvolution
from bagnet_keras.report.plot import plot_evolution


def test_records_the_chosen_epochs_and_the_last_matches_the_atlas():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 12, 12, 3)).astype("float32"), rng.integers(0, 2, 24)
    evolution = FeatureEvolution(x[:8], "conv", units=[1, 4], epochs=[1, 3])
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[evolution])
    assert [(r["epoch"], r["unit"]) for r in evolution.records] == [(1, 1), (1, 4), (3, 1), (3, 4)]
    after = feature_atlas(model, x[:8], ["conv"], units=[1, 4], k=1, progress=False)
    for record in evolution.records[2:]:
        assert (record["image"], record["row"], record["column"]) == after.top("conv", record["unit"])[0][:3]
        assert record["crop"].shape == record["projection"].shape == (3, 3, 3)
    assert len(plot_evolution(evolution.records).axes) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [({"units": []}, "no unit"), ({"units": [0], "epochs": [0]}, "1-based"), ({"units": [0], "mode": "x"}, "mode='x'")],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureEvolution(np.zeros((2, 8, 8, 3)), "conv", **kwargs)
