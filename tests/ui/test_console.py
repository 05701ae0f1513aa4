"""Default verbosity: one line per problem in dbgfwd's words; the SDKs' lines and Python warnings at -v/-vv."""

from __future__ import annotations

import logging
import warnings

from dbgfwd.ui.console import Console


def _emit():
    logging.getLogger("dbgfwd.ssh").warning("host h1 is unreachable since 12:00:01; next try in 4s")
    logging.getLogger("paramiko.transport").error("Secsh channel 3 open FAILED: Connection refused")
    try:
        raise RuntimeError("inside")
    except RuntimeError:
        logging.getLogger("dbgfwd.monitor").warning("probe failed", exc_info=True)
    import urllib3

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Unverified HTTPS request is being made to host 'api.dev'",
                      urllib3.exceptions.InsecureRequestWarning)


def test_default_verbosity_is_one_plain_line_per_problem(capsys):
    Console().configure(verbosity=0)
    _emit()
    err = capsys.readouterr().err.splitlines()
    assert err == ["dbgfwd: warning: host h1 is unreachable since 12:00:01; next try in 4s",
                   "dbgfwd: warning: probe failed"], err


def test_details_come_with_verbosity(capsys):
    Console().configure(verbosity=1)
    _emit()
    err = capsys.readouterr().err
    assert "dbgfwd: warning dbgfwd.ssh: host h1" in err
    assert "Secsh channel 3 open FAILED" in err and "Traceback" in err
    logging.captureWarnings(False)  # pytest swapped warnings.showwarning between the tests: hook it again
    Console().configure(verbosity=2)
    _emit()
    assert "InsecureRequestWarning" in capsys.readouterr().err
    Console().configure(verbosity=0)


def test_each_redaction_pattern_catches_what_only_it_can():
    """One sample per pattern that no other pattern would hide: removing any one pattern leaks its sample."""
    from dbgfwd.ui.console import _REDACTIONS, redact

    samples = {
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "authorization": "Authorization: Basic dXNlcjpzZWNyZXRwYXNz",
        "bearer": "the kubelet said: Bearer sha-ish.token_value-123 was refused",
        "cookie": "Set-Cookie: session=abcdef0123456789",
        "token in quotes": "passphrase 'hunter2-passphrase'",
        "query": "dialing wss://ssmmessages.example/v1/data-channel/s-1?role=publish_subscribe&tok=SIGNATURE99",
        "jwt": "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2hlcmU in the log",
        "openshift token": "oc token sha256~AbCdEfGhIjKlMnOpQrStUv",
        "url password": "https://alice:s3cretpw@proxy.example:8080/",
    }
    secrets = {"private key": "b3BlbnNzaC1rZXk", "authorization": "dXNlcjpzZWNyZXRwYXNz",
               "bearer": "sha-ish.token_value-123", "cookie": "abcdef0123456789",
               "token in quotes": "hunter2-passphrase", "query": "SIGNATURE99",
               "jwt": "c2lnbmF0dXJlX2hlcmU", "openshift token": "AbCdEfGhIjKlMnOpQrStUv", "url password": "s3cretpw"}
    for name, text in samples.items():
        assert secrets[name] not in redact(text), name
    # Each sample needs its own pattern: without it, the secret shows.
    import dbgfwd.ui.console as console_module

    kept = list(_REDACTIONS)
    try:
        leaked = set()
        for i in range(len(kept)):
            console_module._REDACTIONS[:] = kept[:i] + kept[i + 1:]
            leaked |= {name for name, text in samples.items() if secrets[name] in console_module.redact(text)}
        assert leaked >= {"bearer", "private key", "jwt", "openshift token", "url password", "query"}, leaked
    finally:
        console_module._REDACTIONS[:] = kept
