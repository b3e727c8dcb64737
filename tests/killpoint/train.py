"""Test-only: `fit_classifier` on a tiny BagNet, SIGKILLed at the 2nd batch of an epoch (counted from 1).

    python tests/killpoint/train.py OUTPUT_DIR EPOCH

`run` is the training itself, which the test calls again to resume.
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bagnet_keras.transfer import resume  # noqa: E402


def run(output_dir: str) -> dict:
    import keras
    from test_transfer import _data, _tiny_bagnet

    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.training import fit_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
    _, _, train = _data(6, seed=1, batch=6)
    return fit_classifier(model, train, train, epochs=4, patience=None, output_dir=output_dir, verbose=0)


def main(output_dir: str, epoch: str) -> None:
    def on_epoch_begin(self, index, logs=None):
        self._epoch = index

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == int(epoch) - 1 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    resume.EpochBackup.on_epoch_begin = on_epoch_begin
    resume.EpochBackup.on_train_batch_end = on_train_batch_end
    run(output_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
