"""``python -m scanner`` is the same as the ``smtp-tls-survey`` command."""

import sys

try:
    from scanner.cli import run
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was started, no traceback
    print("interrupted while starting: nothing was done", file=sys.stderr)
    raise SystemExit(130) from None

run()
