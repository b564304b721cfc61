"""The command line's exit codes: one closed set, documented in the README ("Exit codes").

Scripts and pipelines branch on these numbers, so each means one thing in every sub-command and a
number is never reused for another meaning. Codes 64-78 follow the BSD ``sysexits.h`` convention where
one fits; 130 is the shell's 128 + SIGINT.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0  # the command did what was asked (a scan completed, or was already complete)
    FAILED = 1  # an unexpected failure (a bug): the message says what; a scan stays resumable
    USAGE = 2  # bad command line or option value (argparse's own code for usage errors)
    # ``check``: the domain was checked, but its answer is one a script may want to branch on.
    CHECK_NO_MAIL_HOST = 3  # NXDOMAIN, null MX (RFC 7505) or no mail host at all
    CHECK_UNTESTABLE = 4  # every MX address failed before a TLS verdict (network, timeout, refusal)
    CHECK_GRADE_BELOW = 5  # the domain's grade is worse than --fail-under
    DATA_ERROR = 65  # EX_DATAERR: the input (or a dataset given to report) is malformed or unreadable
    NO_INPUT = 66  # EX_NOINPUT: an input file or dataset directory does not exist
    UNAVAILABLE = 69  # EX_UNAVAILABLE: our side is broken (resolver dead, no route); the same command resumes
    CANT_CREATE = 73  # EX_CANTCREAT: the output cannot be written (disk full, permissions); resumable
    TEMP_FAIL = 75  # EX_TEMPFAIL: the output directory is locked by another running scan
    CONFIG = 78  # EX_CONFIG: the output holds a scan with other settings, or the trust store is unusable
    INTERRUPTED = 130  # Ctrl-C: everything committed is kept, the same command resumes
