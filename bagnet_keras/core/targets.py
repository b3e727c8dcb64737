"""What an explanation explains: the class logit or the class probability (no Keras here).

The names live in this light module so that the command line offers them
(``--target``) and the registry checks them without loading TensorFlow;
`bagnet_keras.core.graph` computes the scores they name (`target_scores`).
"""

from __future__ import annotations

__all__ = ["TARGETS", "check_target"]

#: What an explanation explains: the class logit (the pre-softmax score, as Grad-CAM's paper defines it) or
#: the class probability.
TARGETS = ("logit", "probability")


def check_target(target) -> str:
    """``target`` when it names a score of `TARGETS`, or a ValueError naming the value.

    Examples
    --------
    >>> check_target("logit")
    'logit'
    >>> check_target("softmax")
    Traceback (most recent call last):
    ...
    ValueError: `target` must be one of ('logit', 'probability'). Received: target='softmax'
    """
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {TARGETS}. Received: target={target!r}")
    return target
