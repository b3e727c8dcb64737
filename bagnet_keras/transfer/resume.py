"""Training that survives a kill: the epoch state of `fit_classifier`, committed after every epoch.

After each epoch, ``<output_dir>/backup/`` receives the model's weights
*with the optimizer's state* (Keras' ``save_weights``, as Keras'
``BackupAndRestore`` saves them), the early-stopping state and its best
weights, the best-checkpoint value and the history so far; ``state.json``,
written last and atomically (`bagnet_keras.core.commit`), is the commit
point and names the files that belong to it. Keras' own ``BackupAndRestore``
is not used because it writes its weights and its epoch number as two
files in place, so a kill between them resumes at the wrong epoch with the
next epoch's weights, and because it knows nothing of the two phases of a
fine-tune nor of early stopping. At the end of a phase the weights that the
phase leaves (early stopping's best) are committed too, so a kill at the
start of the next phase does not repeat it.

``<output_dir>/run.json`` holds the run's arguments
(`bagnet_keras.core.commit.check_arguments`): a rerun with the same ones
continues from the last committed epoch; one with other arguments stops with
an error instead of mixing two runs.
"""

from __future__ import annotations

import csv
import io
import json
import os

import keras
import numpy as np

from bagnet_keras.core.commit import atomic_target, write_atomic
from bagnet_keras.transfer.heads import backbone_units

BACKUP = "backup"
STATE = "state.json"


def model_signature(model: keras.Model) -> list:
    """What the run's weights depend on: each layer's class, weight shapes and trainability, and the
    trainability of the units inside a nested backbone (a transformer's blocks), where it has any."""
    signature = [
        [type(layer).__name__, [list(w.shape) for w in layer.weights], bool(layer.trainable)] for layer in model.layers
    ]
    # Flat backbones add nothing here, so their earlier run folders still resume.
    nested = [bool(unit.trainable) for unit in backbone_units(model) if not any(unit is top for top in model.layers)]
    return signature + [["units", nested]] if nested else signature


def _save_arrays(path: str, arrays: list) -> None:
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, *arrays)


def read_arrays(path: str) -> list:
    with np.load(path, allow_pickle=False) as data:  # never unpickles anything
        return [data[f"arr_{k}"] for k in range(len(data.files))]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' ``EarlyStopping``, whose wait, best value and best weights can be carried over a restart."""

    carried: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.carried:
            self.wait, self.best, self.best_epoch = self.carried["wait"], self.carried["best"], self.carried["epoch"]
            self.best_weights = self.carried.get("weights")


class EpochBackup(keras.callbacks.Callback):
    """Collect the history of `fit_classifier`'s phases and, with a folder, commit the state after every epoch.

    Put it after the callbacks whose state it saves (``checkpoint``,
    ``early``), so that their ``on_epoch_end`` has run. With ``write=False``
    it only reads the folder's committed state (the workers of a multi-worker
    run other than the chief).
    """

    def __init__(self, output_dir: str | None, write: bool = True):
        super().__init__()
        self.folder = os.path.join(output_dir, BACKUP) if output_dir is not None else None
        self.output_dir, self.write = output_dir, write
        self.history: dict[str, list] = {"phase": []}
        self.committed: dict = {}  # the state last committed (or loaded)
        self.phase, self.start, self.checkpoint, self.early = "", 0, None, None

    def load(self) -> dict | None:
        """The last committed state, or None; files a kill left uncommitted are removed."""
        if self.folder is None or not os.path.exists(os.path.join(self.folder, STATE)):
            return None
        with open(os.path.join(self.folder, STATE), encoding="utf-8") as f:
            state = json.load(f)
        self.committed, self.history = state, state["history"]
        if self.write:
            self._remove_files_except(state)
            self._write_csv()
        return state

    def start_phase(self, phase: str, start: int, checkpoint=None, early: ResumableEarlyStopping | None = None):
        """The phase that the next epochs belong to, the epoch it started at, the callbacks whose state to keep."""
        self.phase, self.start, self.checkpoint, self.early = phase, start, checkpoint, early

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                self.history.setdefault(key, []).append(float(value))
        self.history["phase"].append(self.phase)
        if self.folder is None or not self.write:
            return
        weights = os.path.join(self.folder, f"epoch-{epoch + 1:04d}.weights.h5")
        os.makedirs(self.folder, exist_ok=True)
        with atomic_target(weights) as tmp:
            self.model.save_weights(tmp)
        state = {
            "phase": self.phase,
            "complete": False,
            "start": self.start,
            "epoch": epoch + 1,
            "stopped": bool(self.model.stop_training),
            "weights": os.path.basename(weights),
        }
        if self.early is not None:
            improved = self.early.best_epoch == epoch and self.early.best_weights is not None
            early = os.path.join(self.folder, f"early-{epoch + 1:04d}.npz")
            if improved:
                _save_arrays(early, self.early.best_weights)
            previous = (self.committed.get("early") or {}).get("file") if not improved else None
            state["early"] = {
                "wait": self.early.wait,
                "best": _plain(self.early.best),
                "epoch": self.early.best_epoch,
                "file": os.path.basename(early) if improved else previous,
            }
        self._commit(state)

    def complete_phase(self, epoch: int) -> None:
        """Commit the weights the phase leaves (after early stopping restored its best ones)."""
        if self.folder is None or not self.write:
            return
        os.makedirs(self.folder, exist_ok=True)
        weights = os.path.join(self.folder, f"phase-{self.phase}.npz")
        _save_arrays(weights, self.model.get_weights())
        self._commit({"phase": self.phase, "complete": True, "epoch": epoch, "weights": os.path.basename(weights)})

    def _commit(self, state: dict) -> None:
        if self.checkpoint is not None:
            state["best"] = _plain(self.checkpoint.best)
        state["history"] = self.history
        write_atomic(os.path.join(self.folder, STATE), json.dumps(state))
        self.committed = state
        self._remove_files_except(state)
        self._write_csv()

    def _remove_files_except(self, state: dict) -> None:
        keep = {STATE, state.get("weights"), (state.get("early") or {}).get("file")}
        for name in os.listdir(self.folder):
            if name not in keep:
                os.remove(os.path.join(self.folder, name))

    def _write_csv(self) -> None:
        keys = [k for k in self.history if k != "phase"]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["epoch", "phase", *keys])
        for k, phase in enumerate(self.history["phase"]):
            writer.writerow([k, phase, *(self.history[key][k] if k < len(self.history[key]) else "" for key in keys)])
        write_atomic(os.path.join(self.output_dir, "history.csv"), text.getvalue())


def _plain(value):
    return None if value is None else float(value)
