"""Findings: one-line claims with their verdict and the figures behind them, and which way each measure is better.

A study states what its numbers say as `Finding` records: a short claim,
whether it holds (``None`` for a plain statement such as an accuracy), and
the figures it rests on. The terminal prints ``str(finding)``; the report
(`bagnet_keras.report.html.write_report`) shows them as a table with their
marks; ``to_json`` and ``Finding.from_json`` keep them in a run folder.

`higher_is_better` says, once for the whole package, which way each measure
of a comparison (``Comparison.aggregates``'s ``metric``) is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Finding", "MEASURE_DIRECTIONS", "higher_is_better", "percent"]

#: Which way each per-map measure of `bagnet_keras.metrics.comparison.compare` is better: True when higher is,
#: False when lower is, None when neither (``deletion_on_<model>`` columns follow ``deletion_area``).
#: The linearity pair measures the *model* (a bag of local features makes the two equal), not the map.
MEASURE_DIRECTIONS: dict[str, bool | None] = {
    "deletion_area": False,  # the true class's mean probability while the map's top cells are masked
    "insertion_area": True,  # ... while they are restored into a masked image
    "linearity_sum": None,  # logit drop summed over the top cells masked one at a time
    "linearity_joint": None,  # ... with the same cells masked at once
    "pointing": True,  # the map's maximum lies in the ground-truth mask
    "energy": True,  # share of the map's positive mass in the mask
}


def higher_is_better(metric: str) -> bool | None:
    """Whether a higher value of the comparison measure ``metric`` is better (None: neither, or unknown).

    Examples
    --------
    >>> higher_is_better("pointing"), higher_is_better("deletion_on_cnn"), higher_is_better("linearity_sum")
    (True, False, None)
    """
    if metric.startswith("deletion_on_"):
        return MEASURE_DIRECTIONS["deletion_area"]
    return MEASURE_DIRECTIONS.get(metric)


def percent(value: float) -> str:
    """A fraction as a whole percentage, ``"n/a"`` when it is not a number.

    Examples
    --------
    >>> percent(0.914), percent(float("nan"))
    ('91 %', 'n/a')
    """
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f} %"


_MARKS = {True: "✓", False: "✗", None: "•"}


@dataclass(frozen=True)
class Finding:
    """One claim a study makes, whether it holds, and the numbers behind it.

    Parameters
    ----------
    claim : str
        One short line, e.g. "BagNet evidence points into the motifs at least as often as the CNN's best map".
    holds : bool or None
        The verdict; None for a plain statement (e.g. a test accuracy).
    numbers : str
        The short figures behind it, e.g. "BagNet evidence 91 %; best CNN map gradcam@conv3_relu 85 %".

    Examples
    --------
    >>> finding = Finding("Test accuracy", None, "BagNet 90 %, CNN 95 %")
    >>> print(finding)
    • Test accuracy — BagNet 90 %, CNN 95 %
    >>> Finding.from_json(finding.to_json()) == finding, Finding("BagNet wins", False).mark
    (True, '✗')
    """

    claim: str
    holds: bool | None
    numbers: str = ""

    def __post_init__(self):
        if not isinstance(self.claim, str) or not isinstance(self.numbers, str):
            raise TypeError(f"`claim` and `numbers` must be strings. Received: {self.claim!r}, {self.numbers!r}")
        if self.holds not in (True, False, None):
            raise TypeError(f"`holds` must be True, False or None. Received: holds={self.holds!r}")
        # numpy booleans (a comparison of numpy numbers) are stored as plain ones, so the finding is JSON-able
        object.__setattr__(self, "holds", None if self.holds is None else bool(self.holds))

    @property
    def mark(self) -> str:
        """``"✓"`` where the claim holds, ``"✗"`` where it does not, ``"•"`` for a plain statement."""
        return _MARKS[self.holds]

    def __str__(self) -> str:
        return f"{self.mark} {self.claim}" + (f" — {self.numbers}" if self.numbers else "")

    def to_json(self) -> dict:
        """The finding as a JSON-able dict (``claim``, ``holds``, ``numbers``)."""
        return {"claim": self.claim, "holds": self.holds, "numbers": self.numbers}

    @classmethod
    def from_json(cls, value: dict | str) -> Finding:
        """The finding ``to_json`` wrote; a plain string (older run folders kept findings as sentences) is a
        claim without a verdict.

        Examples
        --------
        >>> Finding.from_json("Sanity checks on 8 test images: every map passed both.")
        Finding(claim='Sanity checks on 8 test images: every map passed both.', holds=None, numbers='')
        """
        if isinstance(value, str):
            return cls(value, None)
        if isinstance(value, dict) and "claim" in value and set(value) <= {"claim", "holds", "numbers"}:
            return cls(value["claim"], value.get("holds"), value.get("numbers", ""))
        raise ValueError(
            "A finding is read from a string or a dict with `claim` and optionally `holds` and `numbers` "
            f"(as `Finding.to_json` writes it). Received: {value!r}"
        )
