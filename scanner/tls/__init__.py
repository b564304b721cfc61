"""Pure TLS pieces: the sans-IO codec (``codec``) and the cipher-suite registry (``ciphers``)."""
