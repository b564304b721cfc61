"""``python -m scanner`` is the same as the ``smtp-tls-survey`` command."""

from scanner.cli import main

raise SystemExit(main())
