"""Is this machine affected by the TensorFlow/oneDNN crash in the weight gradient of small 1x1 strided convolutions?

    python -m tools.onednn_check          # prints "affected" or "not affected" as its last line

It trains the smallest known pattern (a 1x1 convolution, stride 2, 8 input
channels, batches of odd sizes) in a child process, with no Keras and no code
of this package, and reads the child's exit status: killed by a signal
(SIGSEGV, or SIGABRT from "double free or corruption") means affected; a
clean exit means not affected. Any other failure is reported as an error
(exit status 2), never as a verdict. See `bagnet_keras.transfer.onednn` for the guard
that `fit_classifier` runs before training.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

# Issue #17's reproducer, over the odd batch sizes and channel counts seen to crash there.
PATTERN = """
import numpy as np, tensorflow as tf
for batch, channels in ((15, 8), (7, 4), (1, 3), (31, 8)):
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, 60, 60, channels)).astype("float32"))
    k = tf.Variable(np.random.default_rng(1).normal(size=(1, 1, channels, 32)).astype("float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.conv2d(x, k, 2, "VALID") ** 2)
        return tape.gradient(loss, k)

    for _ in range({steps}):
        step()
print("survived")
"""


def check(steps: int = 200, timeout: float = 600.0, env: dict | None = None) -> tuple[str, str]:
    """Run the pattern in a child process; return ``("affected" | "not affected", detail)``.

    Raises ``RuntimeError`` when the child fails in any other way (TensorFlow
    missing, a Python error, a time-out), with its output.
    """
    child_env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(
            [sys.executable, "-c", PATTERN.format(steps=steps)],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"The check did not finish within {timeout:.0f} s.") from error
    if done.returncode < 0:
        corruption = " after 'double free or corruption'" if "corruption" in done.stderr else ""
        return "affected", f"the child process was killed by {signal.Signals(-done.returncode).name}{corruption}"
    if done.returncode == 0 and "survived" in done.stdout:
        return "not affected", f"{steps} training steps per pattern ran"
    raise RuntimeError(f"The check failed (exit status {done.returncode}), not a crash:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per pattern (default 200)")
    args = parser.parse_args(argv)
    isa = os.environ.get("DNNL_MAX_CPU_ISA") or os.environ.get("ONEDNN_MAX_CPU_ISA") or "unset"
    print(f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')} DNNL_MAX_CPU_ISA={isa}")
    try:
        verdict, detail = check(args.steps)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(detail)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
