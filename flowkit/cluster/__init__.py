"""Flink's process architecture on one machine: ``flowkit cluster start``.

- :mod:`flowkit.cluster.dispatcher`: the long-running service (REST API, dashboard, job
  submission, job store and history), holding the ResourceManager and one JobManager
  per job;
- :mod:`flowkit.cluster.resourcemanager`: the TaskManager processes and their slots;
- :mod:`flowkit.cluster.jobmanager`: scheduling, deployment, checkpoint coordination and
  failover of one job;
- :mod:`flowkit.cluster.taskmanager`: the worker processes running the subtasks;
- :mod:`flowkit.runtime.network.remote_channel`: channels between TaskManagers (the
  same byte buffers, with credit-based flow control);
- :mod:`flowkit.cluster.rpc`: the control connections between the processes.

Running a job inside the caller's process (``env.execute()``) stays the default.
"""

from flowkit.cluster.dispatcher import Dispatcher
from flowkit.cluster.jobfile import JobSpec

__all__ = ["Dispatcher", "JobSpec"]
