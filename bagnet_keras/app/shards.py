"""The shard a command-line ``--shard`` names: ``I/N``, or read from a cluster's environment (Slurm, Kubernetes).

Which of n shards a process is, is a question of how it was started, so it is
answered here, above the library; the library takes the ``(index, count)``
pair alone and checks it with `bagnet_keras.core.stream.check_shard`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bagnet_keras.core.stream import check_shard

__all__ = ["parse_shard"]


def _number(text: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _invalid(text) from None


def _invalid(text: str) -> ValueError:
    return ValueError(f"--shard {text!r} is not I/N (shard I of N, counted from 0, e.g. 0/4) or env[/N].")


def _from_environment(text: str, count: int | None, environ: Mapping[str, str]) -> tuple[int, int | None]:
    """``(index, count)`` from a Kubernetes indexed Job's or a Slurm array's variables; the count may stay None."""
    if "JOB_COMPLETION_INDEX" in environ:
        return _number(text, environ["JOB_COMPLETION_INDEX"]), count
    if "SLURM_ARRAY_TASK_ID" in environ:
        index = _number(text, environ["SLURM_ARRAY_TASK_ID"]) - _number(text, environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        if count is None and environ.get("SLURM_ARRAY_TASK_COUNT"):
            count = _number(text, environ["SLURM_ARRAY_TASK_COUNT"])
        return index, count
    raise ValueError(
        f"--shard {text}: neither JOB_COMPLETION_INDEX (a Kubernetes indexed Job) nor "
        "SLURM_ARRAY_TASK_ID (a Slurm array) is set; give the shard as I/N."
    )


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The shard a command-line ``--shard`` names: ``"I/N"``, or ``"env"`` / ``"env/N"`` from a cluster's variables.

    With ``env`` the index comes from ``JOB_COMPLETION_INDEX`` (a Kubernetes
    indexed Job) or ``SLURM_ARRAY_TASK_ID`` (a Slurm array; counted from
    ``SLURM_ARRAY_TASK_MIN``), and the count, when not given, from
    ``SLURM_ARRAY_TASK_COUNT``.

    Parameters
    ----------
    text : str
        The option's value.
    environ : mapping, optional
        The environment variables; default: ``os.environ``.

    Returns
    -------
    (index, count)
        Checked by `bagnet_keras.core.stream.check_shard`.

    Examples
    --------
    >>> parse_shard("1/4")
    (1, 4)
    >>> parse_shard("env", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"})
    (4, 8)
    >>> parse_shard("env/3", {"JOB_COMPLETION_INDEX": "2"})
    (2, 3)
    """
    environ = os.environ if environ is None else environ
    head, _, tail = str(text).partition("/")
    count = _number(text, tail) if tail else None
    if head != "env":
        if count is None:
            raise _invalid(text)
        return check_shard((_number(text, head), count))
    index, count = _from_environment(text, count, environ)
    if count is None:
        raise ValueError(f"--shard {text}: the number of shards is not known; give it as env/N.")
    return check_shard((index, count))
