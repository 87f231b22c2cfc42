"""Tokens from DataLad's credential store (issue 11 §7): which one is used,
that it is sent, never asked for and never kept.

The credentials live in DataLad's test keyring (keyrings.alt's
PlaintextKeyring, set by datalad.conftest) whose file is under the test's own
XDG_DATA_HOME: the fixture ``test_keyring`` proves that before anything is
stored, so the real keyring is never touched. The private service is a real
``registry-serve`` behind a small real proxy that wants the token (the
server itself checks none).
"""
from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datalad.downloaders.credentials import Token

from datalad_registry_ext import remote

from . import test_federation as federation
from .test_federation import (Double, config_of, failures, index_files, ok,
                              search, sync)

# the federation tests' fixtures: a served registry, full syncs (autouse)
served = federation.served
full_syncs = federation.full_syncs

TOKEN = "tok-7d41e9b20c6a"


@pytest.fixture
def test_keyring(tmp_path, monkeypatch):
    """DataLad's test keyring, in a file under this test's tmp_path; no
    token in the environment."""
    import keyring
    backend = keyring.get_keyring()
    if type(backend).__name__ != "PlaintextKeyring":
        pytest.skip(f"the keyring is {backend!r}, not DataLad's test keyring "
                    "(datalad.tests.credentials=plaintext)")
    path = Path(backend.file_path)
    assert path.is_relative_to(tmp_path), path
    for var in [v for v in os.environ if v.startswith(remote.TOKEN_ENV)]:
        monkeypatch.delenv(var)
    yield path


@pytest.fixture
def private(served):
    """A proxy to ``served`` that wants ``Authorization: Bearer TOKEN``;
    ``.seen`` holds the Authorization header of every API request."""
    import requests

    seen, git_seen = [], []

    def answer(h, path, q):
        auth = h.headers.get("Authorization")
        if not path.startswith("/api/"):
            # registry-sync asks git first whether the URL is a repository
            git_seen.append(auth)
            return 404, {}, b""
        seen.append(auth)
        if auth != f"Bearer {TOKEN}":
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"code": 401, "description": "a token is required"}).encode()
        r = requests.get(served.url + h.path, timeout=60, headers={
            "Accept": h.headers.get("Accept", "*/*")})
        headers = {k: r.headers[k] for k in ("Content-Type", "ETag")
                   if k in r.headers}
        return r.status_code, headers, r.content

    with Double(answer) as double:
        double.seen, double.git_seen = seen, git_seen
        yield double


@pytest.fixture
def all_logs():
    """Every log record of the process, at every level."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    keep = Keep(level=1)
    loggers = [logging.getLogger(), logging.getLogger("datalad")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(keep)
        lg.setLevel(1)
    yield records
    for lg, level in zip(loggers, levels):
        lg.removeHandler(keep)
        lg.setLevel(level)


def hinted_command(message: str) -> str:
    """The Python code of the ``python -c "..."`` a 401 message shows."""
    found = re.search(r'python -c "([^"]+)"', message)
    assert found, message
    return found.group(1)


def run_in_terminal(code: str, typed: str) -> tuple[int, bytes]:
    """Run ``python -c code`` on a pseudo-terminal, type ``typed`` at its
    prompt; its exit code and everything it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave,
                            stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60

    def read(until):
        nonlocal shown
        while not until() and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 1024)
                except OSError:  # the program has ended
                    return
                if not chunk:
                    return
                shown += chunk
            elif proc.poll() is not None:
                return

    read(lambda: b"token:" in shown)
    os.write(master, typed.encode() + b"\n")
    code = proc.wait(timeout=60)
    read(lambda: False)
    os.close(master)
    return code, shown


# -- the order -------------------------------------------------------------------

def test_the_first_token_found_is_used_in_the_documented_order(
        test_keyring, monkeypatch):
    assert remote.find_token("lab") == (None, None)
    assert not test_keyring.exists()  # nothing was written by reading

    Token("datalad-registry").set(token=" generic-stored ")
    assert remote.find_token("lab") == ("generic-stored", "datalad-registry")
    assert remote.find_token(None) == ("generic-stored", "datalad-registry")

    monkeypatch.setenv("DATALAD_REGISTRY_TOKEN", "generic-env")
    assert remote.find_token("lab") == ("generic-env",
                                        "DATALAD_REGISTRY_TOKEN")

    Token("datalad-registry-lab").set(token="lab-stored")
    assert remote.find_token("lab") == ("lab-stored", "datalad-registry-lab")
    # another source's credential is not used
    assert remote.token_for("lab2") == "generic-env"

    monkeypatch.setenv("DATALAD_REGISTRY_TOKEN_LAB", "lab-env")
    assert remote.find_token("lab") == ("lab-env",
                                        "DATALAD_REGISTRY_TOKEN_LAB")
    assert remote.token_for("lab") == "lab-env"
    # an empty variable is no token
    monkeypatch.setenv("DATALAD_REGISTRY_TOKEN_LAB", "")
    assert remote.token_for("lab") == "lab-stored"
    # the credential's name is the source's name as it is
    Token("datalad-registry-Lab.x:8000").set(token="odd-stored")
    assert remote.find_token("Lab.x:8000") == ("odd-stored",
                                               "datalad-registry-Lab.x:8000")


# -- a private service -----------------------------------------------------------

def test_a_stored_token_is_sent_never_asked_for_and_never_kept(
        tmp_path, test_keyring, private, all_logs, capfd):
    reg = tmp_path / "reg"

    # without a token: refused, and told how to store one
    res = sync(reg, private.url, name="priv")
    (err,) = failures(res)
    assert "HTTP 401" in err["message"]
    assert "DATALAD_REGISTRY_TOKEN_PRIV" in err["message"]
    assert "credential datalad-registry-priv" in err["message"]
    assert private.seen and set(private.seen) == {None}
    # a search --at is told the same (the service is not remembered: its
    # name is its host and port)
    (err2,) = failures(search(reg, "x", at=private.url))
    host = private.url.split("//")[1]
    assert "HTTP 401: a token is required; the service wants a token" \
        in err2["message"]
    assert f"credential datalad-registry-{host}:" in err2["message"]
    assert f"Token('datalad-registry-{host}')" in err2["message"]

    # what the message says to run works, and shows no token
    code, shown = run_in_terminal(hinted_command(err["message"]), TOKEN)
    assert code == 0, shown
    assert TOKEN.encode() not in shown
    assert Token("datalad-registry-priv").get("token") == TOKEN

    # with it: the sync and a search --at get through the proxy
    private.seen.clear()
    res = sync(reg, private.url, name="priv")
    assert res[-1]["status"] == "ok", res
    assert not failures(res)
    res += search(reg, "x", at="priv", limit=2)
    assert not failures(res)
    assert private.seen and \
        all(h == f"Bearer {TOKEN}" for h in private.seen)
    assert all(h is None for h in private.git_seen)  # git is not given it
    found = search(reg, None, source="priv")
    assert len([r for r in ok(found)
                if r.get("action") == "registry_search"]) > 0

    # ... and is nowhere: results, the registry's config and index, logs,
    # output
    out, errout = capfd.readouterr()
    assert TOKEN not in json.dumps(res + found, default=str)
    assert TOKEN not in config_of(reg)
    assert all(TOKEN.encode() not in data
               for data in index_files(reg).values())
    assert all_logs  # the logs were captured
    assert all(TOKEN not in line for line in all_logs)
    assert TOKEN not in out and TOKEN not in errout


def test_a_refused_stored_token_is_named_not_shown(
        tmp_path, test_keyring, private):
    reg = tmp_path / "reg"
    wrong = "tok-wrong-0b9e55"
    Token("datalad-registry").set(token=wrong)
    res = sync(reg, private.url, name="priv")
    (err,) = failures(res)
    assert "does not accept the token given (from datalad-registry)" \
        in err["message"]
    assert private.seen and set(private.seen) == {f"Bearer {wrong}"}
    assert wrong not in json.dumps(res, default=str)
    assert not (reg / ".git").exists() or wrong not in config_of(reg)


def test_the_keyring_tool_stores_it_as_documented(tmp_path, test_keyring,
                                                  private):
    """``keyring set datalad-datalad-registry-NAME token``, the token on
    standard input (federation.rst)."""
    done = subprocess.run(
        [sys.executable, "-m", "keyring", "set",
         "datalad-datalad-registry-priv", "token"],
        input=TOKEN + "\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    res = sync(tmp_path / "reg", private.url, name="priv")
    assert res[-1]["status"] == "ok", res
