"""Test-only: `fit_classifier` on a tiny BagNet, killed during an epoch, or resumed with what it starts from recorded.

    python tests/killpoint/train.py OUTPUT_DIR kill EPOCH     # SIGKILL at the 2nd batch of epoch EPOCH (from 1)
    python tests/killpoint/train.py OUTPUT_DIR resume RECORD  # save the first epoch's number, weights, optimizer

Everything else is the same in both, as a rerun of the same command is.
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from bagnet_keras.transfer import resume  # noqa: E402


def main(output_dir: str, mode: str, argument: str) -> None:
    import keras
    from test_transfer import _data, _tiny_bagnet

    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.training import fit_classifier

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if mode == "resume" and not os.path.exists(argument):  # what the resumed run starts its first epoch from
            arrays = {f"weight_{k}": w for k, w in enumerate(self.model.get_weights())}
            arrays.update({f"optimizer_{k}": np.asarray(v) for k, v in enumerate(self.model.optimizer.variables)})
            np.savez(argument, epoch=epoch, **arrays)

    def on_train_batch_end(self, batch, logs=None):
        if mode == "kill" and self._epoch == int(argument) - 1 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    resume.EpochBackup.on_epoch_begin = on_epoch_begin
    resume.EpochBackup.on_train_batch_end = on_train_batch_end
    keras.utils.set_random_seed(0)
    model = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
    _, _, train = _data(6, seed=1, batch=6)
    fit_classifier(model, train, train, epochs=4, patience=None, output_dir=output_dir, verbose=0)


if __name__ == "__main__":
    main(*sys.argv[1:])
