"""One scan on many worker processes and machines, on Ray (``scan --workers N`` / ``--cluster ADDRESS``).

- ``shard``: who does what (a domain's worker, an address's owner, a worker's segment numbers).
- ``driver``: the CLI process's side: reads the input, feeds the workers, owns the scan record.
- ``worker``: the Ray actor: the whole pipeline on its share, and the owner of its addresses' probes.
- ``journal``: what each of a worker's commits made durable (input lines, waiting requests).
- ``remote``: a worker's requests to the owners of other addresses, batched.
- ``state``: what a (re)started worker reads from the committed dataset.

Ray is an optional extra (``pip install 'smtp-tls-survey[ray]'``): only ``driver`` and ``worker``
import it, and the CLI imports them only for --workers/--cluster, so a single-process scan never needs it.
"""

from __future__ import annotations

__all__ = ["ClusterUnavailable", "require_ray"]


class ClusterUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be started or reached."""


def require_ray() -> None:
    try:
        import ray  # noqa: F401, PLC0415 (an optional extra: imported only when asked for)
    except ImportError as exc:
        raise ClusterUnavailable("--workers/--cluster need Ray: pip install 'smtp-tls-survey[ray]'") from exc
