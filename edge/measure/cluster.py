"""``edge measure --cluster ADDRESS``: the same tasks on a Dask distributed cluster.

Every task (a file, or a chunk of a long one) becomes a Dask task, run by
``edge.measure.pool.run_task`` on whichever worker the scheduler picks; the
results come back to this process, which stitches, sweeps and writes the report
exactly as a local run does. Each worker thread builds one engine per run and
keeps it for the run's further tasks.

What the workers need: edge-recorder installed with the same models (``edge models
fetch``, or the same ``wake.models_dir``), and the audio at the same paths as here (a
shared file system). Dask itself is an optional extra (``pip install -e '.[cluster]'``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

from edge.errors import EdgeError, UsageError

CONNECT_TIMEOUT_S = 20.0

T = TypeVar("T")
R = TypeVar("R")


def run_on_cluster(address: str, run: Callable[[object, str, T], R], shared: object,
                   items: list[T], done: Callable[[R], None]) -> list[R]:
    """``run(shared, token, item)`` for every item, on the Dask scheduler at ``address``.

    ``shared`` goes to every worker once; ``token`` names this run (a worker keeps one
    engine per run); ``done`` is called here with each result as it arrives.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("--cluster needs Dask distributed: install the cluster extra "
                         "(pip install -e '.[cluster]')") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise EdgeError(f"cannot reach the Dask scheduler at {address} ({exc}); give its "
                        "address as tcp://HOST:8786 (dask scheduler prints it)") from None
    try:
        token = uuid.uuid4().hex
        on_workers = client.scatter(shared, broadcast=True)
        futures = [client.submit(run, on_workers, token, item, pure=False) for item in items]
        results: list[R] = []
        for future in as_completed(futures):
            result: R = future.result()
            results.append(result)
            done(result)
        return results
    finally:
        client.close()
