"""The one console: owns stdout/stderr, verbosity, colour, --json and log redaction.

Commands print through `console`; nothing else writes to stdout. In --json mode stdout carries only
JSON; human messages go to stderr. Log records pass a redaction filter so tokens, signatures and
presigned URLs never reach the terminal at any verbosity. Text from outside (pod and host names, server
error messages, marker fields) passes `clean` before it reaches a terminal: control characters and
escape sequences are shown escaped, never acted on, and it is never read as rich markup.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from typing import Any, Iterator

from dbgfwd import envvars

SDK_LOGGERS = ("paramiko", "kubernetes", "urllib3", "botocore", "boto3", "websocket", "s3transfer")

# Things that look like secrets in log text: bearer tokens, AWS signatures/tokens, SSM TokenValue,
# query strings of presigned/stream URLs, private keys, JWTs (kube service-account tokens), OpenShift
# OAuth tokens (sha256~...), cookies, and any key=value / "key": "value" whose key names a secret.
_SECRET_KEYS = (r"(?:[\w-]*token[\w-]*|tokenvalue|[\w-]*secret[\w-]*|x-amz-signature|x-amz-credential|"
                r"signature|credential|[\w-]*password[\w-]*|[\w-]*passphrase[\w-]*|passwd|api[_-]?key|"
                r"private[_-]?key)")
_REDACTIONS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     "<redacted private key>"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(bearer\s+|basic\s+|aws4-hmac-sha256\s+)?[^\s\"',}]+"),
     r"\1\2<redacted>"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(\b(?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n}]+"), r"\1<redacted>"),
    (re.compile(r"(?i)([\"']?" + _SECRET_KEYS + r"[\"']?\s*[:=]\s*(?:b?[\"'])?)[^\s\"'&,;}\\]+"), r"\1<redacted>"),
    # "passphrase 'x'", "token \"x\"": a secret word followed by a quoted value
    (re.compile(r"(?i)(\b(?:token|passphrase|password|secret)\s+)(['\"])[^'\"]*\2"), r"\1\2<redacted>\2"),
    (re.compile(r"((?:wss?|https?)://[^\s?\"']+)\?[^\s\"']+"), r"\1?<redacted>"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"), "<redacted jwt>"),
    (re.compile(r"\bsha256~[A-Za-z0-9_-]{8,}"), "sha256~<redacted>"),
    # user:password@ in URLs
    (re.compile(r"((?:wss?|https?|ssh)://[^\s:/@\"']+):[^\s@/\"']+@"), r"\1:<redacted>@"),
]


def redact(text: str) -> str:
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = redact(message), None
        return True


# ESC-led sequences (CSI, OSC ... BEL/ST, two-byte), then lone C0/C1 controls (newline and tab are kept).
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: Any) -> str:
    """`text` safe for a terminal: control characters and escape sequences shown escaped (\\x1b[2J)."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record: the filter cannot reach tracebacks (exc_info, stack_info),
    whose exception messages may carry URLs or tokens. Control characters are neutralised too. Level names
    are written as dbgfwd's own lines are ("warning", "error")."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        if self.verbose_tracebacks is False:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return clean(redact(super().format(record)))

    verbose_tracebacks: bool | None = None


class Console:
    def __init__(self) -> None:
        self.json = False
        self.verbosity = 0
        self.debug = False
        self._configure_streams(no_color=bool(os.environ.get(envvars.NO_COLOR)))
        self._handler: logging.Handler | None = None

    def _configure_streams(self, no_color: bool) -> None:
        self._no_color = no_color
        self._out = self._err = None  # made on first use: `--help` never loads rich (~25 ms)

    def _rich(self, **kwargs: Any):
        from rich.console import Console as RichConsole

        # --no-color / NO_COLOR: no escape sequences at all (rich's no_color alone still writes bold and
        # dim), so logs and terminals that show them raw stay readable, even under FORCE_COLOR
        plain = {"no_color": True, "color_system": None} if self._no_color else {}
        return RichConsole(highlight=False, **kwargs, **plain)

    @property
    def out(self):
        if self._out is None:
            self._out = self._rich(soft_wrap=False)
        return self._out

    @property
    def err(self):
        if self._err is None:
            self._err = self._rich(stderr=True)
        return self._err

    def configure(self, verbosity: int = 0, debug: bool = False, no_color: bool = False) -> None:
        self.verbosity = verbosity
        self.debug = debug or os.environ.get(envvars.DEBUG) == "1"
        self._configure_streams(no_color or bool(os.environ.get(envvars.NO_COLOR)))
        self._setup_logging()

    def _setup_logging(self) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
        handler = logging.StreamHandler(sys.stderr)
        # One line per problem in dbgfwd's words by default; where it came from at -v.
        fmt = "dbgfwd: %(levelname)s: %(message)s" if self.verbosity == 0 else \
            "dbgfwd: %(levelname)s %(name)s: %(message)s"
        formatter = RedactingFormatter(fmt)
        formatter.verbose_tracebacks = self.verbosity >= 1 or self.debug  # a traceback is a detail too
        handler.setFormatter(formatter)
        handler.addFilter(_RedactingFilter())
        self._handler = handler
        root.addHandler(handler)
        level = logging.WARNING if self.verbosity == 0 else logging.INFO if self.verbosity == 1 else logging.DEBUG
        root.setLevel(logging.WARNING)
        logging.getLogger("dbgfwd").setLevel(level)
        # The SDKs' own lines ("Secsh channel 3 open FAILED", tracebacks from their threads) are details:
        # dbgfwd reports each problem itself. They show from -v on (errors) and -vv (everything).
        sdk_level = logging.DEBUG if self.verbosity >= 2 else logging.ERROR if self.verbosity else logging.CRITICAL + 1
        for name in SDK_LOGGERS:
            logging.getLogger(name).setLevel(sdk_level)
        # Python warnings (urllib3's InsecureRequestWarning with a site-packages path) become log records too.
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.WARNING if self.verbosity >= 2 else logging.CRITICAL + 1)

    # ---- output ----
    def emit_json(self, obj: Any) -> None:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Human output to stdout (tables, results). In --json mode it goes to stderr instead."""
        (self.err if self.json else self.out).print(*objects, **kwargs)

    def info(self, message: str) -> None:
        self.err.print(clean(redact(message)), markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.err.print(f"dbgfwd: warning: {clean(redact(message))}", style="yellow", markup=False, highlight=False)

    def error(self, message: str, hint: str | None = None) -> None:
        line = f"dbgfwd: error: {clean(redact(message))}"
        if hint:
            line = f"{line.rstrip('.')}; {clean(redact(hint))}"
        self.err.print(line, style="bold red", markup=False, highlight=False, soft_wrap=True)

    def traceback(self) -> None:
        """The current exception's traceback (--debug), redacted: messages may carry URLs or tokens.
        Plain text, never rich's traceback with locals (locals can hold credentials)."""
        import traceback

        self.err.print(clean(redact(traceback.format_exc())), markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner on stderr while long work runs (only on a terminal, never in --json mode)."""
        if self.json or not self.err.is_terminal:
            yield
            return
        with self.err.status(message):
            yield


console = Console()
