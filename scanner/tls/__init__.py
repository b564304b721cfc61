"""Pure TLS pieces: versions (``versions``), the sans-IO codec (``messages``, ``builder``, ``parser``), the cipher-suite
and group registries (``ciphers``, ``groups``), the enumeration planner; ``probe`` alone does I/O (through
``scanner.net.stream``)."""
