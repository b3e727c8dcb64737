"""Regenerate tests/fixtures/ with the authors' PyTorch model definition (needs torch).

    python -m tools.make_fixtures

The fixtures are small BagNets (base width 8) with random weights and
BatchNorm statistics, saved the ways checkpoints are found in the wild, plus
the model's outputs on fixed inputs and the authors' full-resolution
heatmap of a crop. The package's tests read them without
torch. Also writes a state dict whose tensors are views into shared storages.
"""

import json
import os

import numpy as np
import torch

from tools.torch_bagnet import BagNet, randomize

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
MEAN = np.array([0.485, 0.456, 0.406], dtype="float32")
STD = np.array([0.229, 0.224, 0.225], dtype="float32")
PATCH = {"tiny33": 33, "tiny9": 9, "tiny21": 21}

CONFIGS = {
    "tiny33": dict(layers=(1, 1, 1, 1), kernel3=(1, 1, 1, 1), size=72, classes=5, seed=1, heatmap=40),
    "tiny9": dict(layers=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), size=48, classes=5, seed=2, heatmap=24),
    # Two 3x3 blocks in a stage: the identity shortcut is cropped too.
    "tiny21": dict(layers=(2, 2, 1, 1), kernel3=(2, 1, 1, 0), size=64, classes=4, seed=3, heatmap=32),
}


def write_heatmap(name, model, image, target):
    """The authors' full-resolution heatmap: pad by (q-1)/2 zeros, run the patch centred on every pixel alone."""
    q = PATCH[name]
    pad = (q - 1) // 2
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    s = image.shape[0]
    patches = torch.cat([padded[:, :, i : i + q, j : j + q] for i in range(s) for j in range(s)])
    model.avg_pool = True
    with torch.no_grad():
        heatmap = model(patches)[:, target].reshape(s, s).numpy()
    np.savez_compressed(
        os.path.join(HERE, f"{name}_heatmap.npz"), heatmap_input=image[None], heatmap_target=target, heatmap=heatmap
    )


def main():
    os.makedirs(HERE, exist_ok=True)
    for name, c in CONFIGS.items():
        torch.manual_seed(c["seed"])
        model = randomize(
            BagNet(list(c["layers"]), kernel3=c["kernel3"], num_classes=c["classes"], base_width=8), c["seed"]
        )
        rng = np.random.default_rng(c["seed"])
        images = rng.uniform(0, 255, size=(2, c["size"], c["size"], 3)).astype("float32")
        inputs = ((images / 255.0 - MEAN) / STD).astype("float32")
        x = torch.from_numpy(inputs).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            logits = model(x).numpy()
            model.avg_pool = False
            evidence = model(x).numpy()
        state = model.state_dict()
        torch.save(state, os.path.join(HERE, f"{name}.pth.tar"), _use_new_zipfile_serialization=False)
        torch.save(
            {"epoch": 3, "arch": name, "state_dict": {"module." + k: v for k, v in state.items()}},
            os.path.join(HERE, f"{name}.dp.pth"),
        )
        np.savez_compressed(
            os.path.join(HERE, f"{name}_outputs.npz"), images=images, inputs=inputs, logits=logits, evidence=evidence
        )
        write_heatmap(name, model, inputs[0, : c["heatmap"], : c["heatmap"]], c["seed"])
        with open(os.path.join(HERE, f"{name}.json"), "w") as f:
            json.dump(
                {
                    "blocks": c["layers"],
                    "kernel3": c["kernel3"],
                    "strides": [2, 2, 2, 1],
                    "base_width": 8,
                    "classes": c["classes"],
                    "torch": torch.__version__,
                },
                f,
                indent=1,
            )

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {
        "base": base,
        "rows": base[1:3],
        "transposed": base.t(),
        "strided": base[:, ::2],
        "element": base[2, 5],
        "long": torch.arange(5, dtype=torch.int64)[1:],
        "half": base.half()[0],
    }
    for fmt, zipped in (("legacy", False), ("zip", True)):
        torch.save(views, os.path.join(HERE, f"views_{fmt}.pth"), _use_new_zipfile_serialization=zipped)
    np.savez(os.path.join(HERE, "views_expected.npz"), **{k: v.numpy() for k, v in views.items()})


if __name__ == "__main__":
    main()
