"""Job files as the unit of submission, as Flink ships a jar.

A job reaches a cluster as the text of its job file (a module with ``build(env)``) and
the options it was submitted with. The Dispatcher keeps a copy in its job store; the
JobManager and every TaskManager import that copy and call ``build(env)`` on a fresh
environment, which yields the same graph in every process.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowkit.api.environment import StreamExecutionEnvironment

__all__ = ["JobSpec", "build_environment"]


@dataclass(frozen=True)
class JobSpec:
    """What was submitted: the job file's copy in the job store and its options.

    Example:
        >>> spec = JobSpec(job_id="a1", name="wc", job_file="/tmp/wc.py", parallelism=2)
        >>> spec.parallelism
        2
    """

    job_id: str
    name: str
    #: The job store's copy of the job file.
    job_file: str
    #: Default parallelism (``flowkit run -p``); None: the job's own.
    parallelism: int | None = None
    #: Arguments after ``--`` (for ``build(env, args)``).
    args: list[str] = field(default_factory=list)
    #: ``--set key=value`` settings.
    settings: list[str] = field(default_factory=list)
    #: A checkpoint or savepoint to start from.
    restore_from: str | None = None
    allow_non_restored_state: bool = False
    #: ``flowkit run --checkpoint-dir``: enable checkpointing into it (None: as the job
    #: file says).
    checkpoint_dir: str | None = None
    checkpoint_interval_ms: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def build_environment(spec: JobSpec) -> StreamExecutionEnvironment:
    """Import the job file and let its ``build(env)`` add the job to a new environment.

    Raises:
        CliError: the file is missing, fails to import, has no ``build`` or ``build``
            fails (the message names the file).
    """
    from flowkit.cli import CliError, _takes_arguments, load_job, make_environment

    build = load_job(spec.job_file)
    env = make_environment(
        spec.parallelism or 1, spec.settings, spec.checkpoint_dir, spec.checkpoint_interval_ms
    )
    name = os.path.basename(spec.job_file)
    try:
        if _takes_arguments(build):
            build(env, list(spec.args))
        else:
            build(env)
    except Exception as exc:
        raise CliError(f"build() of {name} failed: {type(exc).__name__}: {exc}") from exc
    _share_checkpoint_directory(env, spec)
    return env


def _share_checkpoint_directory(env: StreamExecutionEnvironment, spec: JobSpec) -> None:
    """Checkpointing enabled without a directory: every process of the cluster must use
    the same one (TaskManagers write the state files, the JobManager ``_metadata``), so
    instead of a temporary directory of its own each takes ``checkpoints/`` next to the
    job file's copy in the job store, which the job store keeps."""
    config = env.checkpoint_config
    if config is None or not env._uses_temporary_checkpoint_dir():
        return
    shared = os.path.join(os.path.dirname(os.path.abspath(spec.job_file)), "checkpoints")
    env.checkpoint_config = dataclasses.replace(config, directory=shared)
    if env._unused_temporary_checkpoint_dir is not None:
        env._unused_temporary_checkpoint_dir()  # removes the unused temporary directory
    env._own_temporary_checkpoint_dir(None)


def store_job_file(directory: str | os.PathLike[str], job_id: str, source: str) -> str:
    """Write the submitted job file's text into the job store; returns its path."""
    folder = Path(directory) / "jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.py"
    path.write_text(source)
    return str(path)
