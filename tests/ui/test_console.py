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
