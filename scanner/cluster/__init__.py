"""One scan on many worker processes and machines, on Ray (``scan --workers N`` / ``--cluster ADDRESS``).

- ``shard``: who does what (a domain's worker, an address's owner, a worker's segment numbers).
- ``driver``: the CLI process's side: reads the input, feeds the workers, owns the scan record.
- ``worker``: the Ray actor: the whole pipeline on its share, and the owner of its addresses' probes.
- ``remote``: a worker's requests to the owners of other addresses, batched.
- ``state``: what a (re)started worker reads from the committed dataset.

Ray is an optional extra (``pip install 'smtp-tls-survey[ray]'``): only ``driver`` and ``worker``'s
calls import it, so a single-process scan never needs it.
"""
