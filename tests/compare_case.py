"""Test-only: a small cleaned and split dataset of motif scenes, and two tiny saved models for it."""

import keras
from PIL import Image

CLASSES = ["cross", "ring", "triangle"]


def motif_dataset(root, per_class: int = 8, size: int = 48) -> None:
    """``root/<class>/<i>.png`` for three motif classes, cleaned and split 0.5 / 0.25 / 0.25."""
    from data_tools.clean import clean
    from data_tools.split import split
    from data_tools.synthetic import motif_scene

    for k, label in enumerate(CLASSES):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(motif_scene(label, seed=10 * k + i, size=size)[0]).save(root / label / f"{i}.png")
    clean(str(root), min_size=32, progress=False)
    split(str(root), ratios=(0.5, 0.25, 0.25))


def saved_models(folder, size: int = 48) -> dict:
    """A tiny BagNet and a tiny CNN with 3-class heads, saved as ``folder/<name>.keras``; name -> path."""
    from bagnet_keras import BagNet
    from bagnet_keras.transfer.heads import build_classifier

    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=4, include_top=False, input_shape=(size, size, 3)
    )
    cnn = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3, activation="relu")])
    paths = {}
    for name, backbone in (("bagnet", bagnet), ("cnn", cnn)):
        paths[name] = str(folder / f"{name}.keras")
        build_classifier(backbone, len(CLASSES), mode="scratch").save(paths[name])
    return paths
