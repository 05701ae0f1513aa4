"""One error hierarchy and one exit-code enum for the whole tool.

Every failure a user can cause or meet is a `DbgfwdError` carrying an `ExitCode`; the CLI boundary
(`dbgfwd.cli.main`) renders it as a single stderr line (plus a hint) and exits with that code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every dbgfwd command (documented in `dbgfwd --help` and the README)."""

    OK = 0
    ERROR = 1  # unexpected failure (a bug): rerun with --debug for the traceback
    USAGE = 2  # bad arguments or options
    NOT_FOUND = 3  # no targets or ranks matched what was asked
    PORT_UNAVAILABLE = 4  # a port range that does not fit, or an explicit port that is busy
    AUTH = 5  # authentication/authorization: SSH auth, expired token, RBAC, AccessDenied
    UNREACHABLE = 6  # host, API server or SSM target cannot be reached
    TIMEOUT = 7  # `dbgfwd wait` (or another bounded wait) ran out of time
    BAD_FILE = 8  # a file or folder named is missing, unreadable or does not parse (launch.json, hostfile, ...)
    UNAVAILABLE = 9  # a provider's SDK or helper binary is missing
    NO_SESSION = 10  # no running `dbgfwd attach` session in this workspace
    BUSY = 11  # another `dbgfwd attach` already runs in this workspace
    NOT_INJECTED = 12  # `attach --inject` found ranks but could make none of them debuggable (reasons printed)
    HANGUP = 129  # stopped by SIGHUP (the terminal closed), after a clean shutdown
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # stopped by SIGTERM, after a clean shutdown

    @classmethod
    def describe(cls) -> str:
        return "\n".join(f"{c.value:>3}  {_DESCRIPTIONS[c]}" for c in cls)


_DESCRIPTIONS = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (rerun with --debug for a traceback)",
    ExitCode.USAGE: "bad arguments or options",
    ExitCode.NOT_FOUND: "no targets or ranks found",
    ExitCode.PORT_UNAVAILABLE: "port range does not fit or an explicit port is busy",
    ExitCode.AUTH: "authentication or permission failure",
    ExitCode.UNREACHABLE: "host, API server or SSM target unreachable",
    ExitCode.TIMEOUT: "timed out waiting",
    ExitCode.BAD_FILE: "a file or folder is missing, unreadable or does not parse (nothing was written)",
    ExitCode.UNAVAILABLE: "provider SDK or helper binary missing",
    ExitCode.NO_SESSION: "no running attach session in this workspace",
    ExitCode.BUSY: "another dbgfwd attach runs in this workspace",
    ExitCode.NOT_INJECTED: "attach --inject could make no rank debuggable",
    ExitCode.HANGUP: "stopped by SIGHUP (terminal closed)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.TERMINATED: "stopped by SIGTERM",
}


class DbgfwdError(Exception):
    """Base of every error dbgfwd reports to a user.

    `message` is one line saying what was wrong; `hint` one line saying what to do about it.
    """

    code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None, *, code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UsageError(DbgfwdError):
    code = ExitCode.USAGE


class NotFoundError(DbgfwdError):
    code = ExitCode.NOT_FOUND


class PortError(DbgfwdError):
    code = ExitCode.PORT_UNAVAILABLE


class AuthError(DbgfwdError):
    code = ExitCode.AUTH


class UntrustedPathError(DbgfwdError):
    """A directory or file another user controls, where dbgfwd would take orders from it (exit 5)."""

    code = ExitCode.AUTH


class UnreachableError(DbgfwdError):
    code = ExitCode.UNREACHABLE


class WaitTimeout(DbgfwdError):
    code = ExitCode.TIMEOUT


class BadFileError(DbgfwdError):
    """A file that does not parse. `path`, `line`, `column` locate the problem when known."""

    code = ExitCode.BAD_FILE

    def __init__(self, path, problem: str, line: int | None = None, column: int | None = None,
                 hint: str | None = None):
        where = f"{path}"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {problem}", hint)
        self.path, self.problem, self.line, self.column = path, problem, line, column


class NotFoundPathError(DbgfwdError):
    """A file or folder the user named (or its default) does not exist: the same exit code as a file that
    does not parse (one rule for every file: exit 8)."""

    code = ExitCode.BAD_FILE


class ProviderUnavailable(DbgfwdError):
    code = ExitCode.UNAVAILABLE


class NoSessionError(DbgfwdError):
    code = ExitCode.NO_SESSION


class WorkspaceBusy(DbgfwdError):
    code = ExitCode.BUSY


class NotInjectedError(DbgfwdError):
    code = ExitCode.NOT_INJECTED


class UpstreamError(DbgfwdError):
    """Opening or using a stream to a rank failed.

    `retryable` tells the engine whether backing off and trying again can help (connection refused,
    transport down) or not (forbidden, expired credentials: the rank goes to FAILED with this message).
    """

    code = ExitCode.UNREACHABLE

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = True,
                 code: ExitCode | None = None):
        super().__init__(message, hint, code=code)
        self.retryable = retryable
