"""The one way this package runs git and git-annex.

Every call goes through :func:`run` with the same hardened environment:

- no prompts: an unreachable or private URL must fail with a message, not
  wait for a password (``GIT_TERMINAL_PROMPT=0``, ssh in batch mode);
- no inherited ``GIT_DIR``/``GIT_WORK_TREE``/``GIT_INDEX_FILE``: a user's
  environment (or a git hook we run under) must never redirect a command to
  another repository;
- output is decoded as UTF-8 with replacement characters, so a branch or file
  name that is not UTF-8 can never crash a command.

:func:`git` returns stdout and raises :class:`RepositoryError` (with any
credentials scrubbed from the message) when git fails. :func:`read_gitmodules`
is the one ``.gitmodules`` parser, used for registered repositories and for
the registry itself.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
from pathlib import Path

from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import scrub


class RepositoryError(RegistryExtError):
    """A repository cannot be cloned, updated, read or described."""


def env(extra: dict | None = None) -> dict:
    """The environment every git and git-annex process runs with."""
    e = dict(os.environ)
    e["GIT_TERMINAL_PROMPT"] = "0"
    e.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        e.pop(name, None)
    if extra:
        e.update(extra)
    return e


class GitTimeout(RepositoryError):
    """git did not finish within its time limit (a server that accepts a
    connection and never answers)."""


def run(args, cwd=None, *, input: bytes | str | None = None,
        extra_env: dict | None = None, program=None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run git (or ``program``) with ``args``; bytes in, bytes out, no check.

    Raises RepositoryError only if the program cannot be started at all, and
    :class:`GitTimeout` when ``timeout`` (seconds) passes first.
    """
    cmd = [*(program or ["git"]), *args]
    if isinstance(input, str):
        input = input.encode("utf-8")
    if timeout is not None:
        return _run_with_timeout(cmd, cwd, input, extra_env, timeout)
    try:
        return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True,
                              env=env(extra_env))
    except OSError as e:
        raise RepositoryError(f"cannot run {cmd[0]}: {e.strerror or e}") from e


def _run_with_timeout(cmd, cwd, input, extra_env, timeout: float):
    # git runs helpers (git-remote-http, ssh, upload-pack) as children of its
    # own: killing git alone would leave a helper waiting on the silent
    # server, holding our pipes open. A session of its own lets the whole
    # group go at once.
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(extra_env),
                                stdin=subprocess.PIPE if input else
                                subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as e:
        raise RepositoryError(f"cannot run {cmd[0]}: {e.strerror or e}") from e
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        raise GitTimeout(f"no answer within {timeout:g} s") from None
    except BaseException:
        # e.g. KeyboardInterrupt: leave no git behind
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def git(args, cwd=None, *, check: bool = True, secrets=(), input=None,
        extra_env: dict | None = None, program=None,
        timeout: float | None = None) -> str:
    """Run git, return its stdout as text; on failure raise RepositoryError
    whose message is git's last lines of stderr, credentials removed (and
    :class:`GitTimeout` after ``timeout`` seconds, whatever ``check``)."""
    proc = run(args, cwd, input=input, extra_env=extra_env, program=program,
               timeout=timeout)
    if check and proc.returncode != 0:
        name = (program or ["git"])[-1]
        msg = decode(proc.stderr).strip() or decode(proc.stdout).strip() or (
            f"{name} {args[0]} exited with {proc.returncode}")
        raise RepositoryError(scrub(last_lines(msg), secrets))
    return decode(proc.stdout)


def ok(args, cwd=None) -> bool:
    """Whether git succeeds (e.g. ``rev-parse --verify``)."""
    return run(args, cwd).returncode == 0


def popen(args, cwd=None) -> subprocess.Popen:
    """A long-running git process talking through pipes (``cat-file
    --batch``), with our environment; its stderr is discarded."""
    return subprocess.Popen(["git", *args], cwd=cwd, env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


@functools.lru_cache(maxsize=1)
def _annex_program() -> tuple[str, ...]:
    """How to run git-annex: the binary itself when we can find it.

    The PyPI ``git-annex`` wheel runs the binary through a Python wrapper
    script (and pyenv adds a shell shim): ~80 ms per call that the binary
    alone does not need.
    """
    try:
        import git_annex  # optional: only the PyPI wheel has it
        binary = Path(git_annex.__file__).with_name("git-annex")
        if os.access(binary, os.X_OK):
            return (str(binary),)
    except ImportError:
        pass
    return ("git", "annex")


def annex(args, cwd, *, check: bool = True) -> str:
    """Run a git-annex command in ``cwd``; stdout as text."""
    return git(args, cwd, check=check, program=_annex_program())


def last_lines(msg: str, n: int = 3) -> str:
    lines = [ln for ln in msg.splitlines() if ln.strip()
             and not ln.startswith(("hint:", "warning: You appear"))]
    return "; ".join(lines[-n:])


# -- .gitmodules --------------------------------------------------------------

_SUBMODULE_KEY = re.compile(r"^submodule\.(.+)\.([^.]+)$", re.DOTALL)


def gitlinks(repo, commit: str) -> dict[str, str]:
    """``{path: recorded commit}`` of the gitlinks (subdataset entries) in
    ``commit``'s tree."""
    out = git(["ls-tree", "-r", "-z", commit], cwd=repo)
    links = {}
    for item in out.split("\0"):
        if item.startswith("160000 "):
            meta, _, path = item.partition("\t")
            links[path] = meta.split()[2]
    return links


def read_gitmodules(repo, commit: str) -> dict[str, dict]:
    """``{name: {key: value}}`` of ``.gitmodules`` at ``commit``, in file
    order; keys lower-cased (git's own rule for variable names).

    Empty when the commit has no ``.gitmodules``; RepositoryError when git
    cannot parse it.
    """
    if not ok(["cat-file", "-e", f"{commit}:.gitmodules"], repo):
        return {}
    proc = run(["config", "--blob", f"{commit}:.gitmodules", "--list", "-z"],
               repo)
    if proc.returncode != 0:
        detail = last_lines(decode(proc.stderr).strip(), 1)
        raise RepositoryError(f"its .gitmodules is broken ({detail})")
    sections: dict[str, dict] = {}
    for item in decode(proc.stdout).split("\0"):
        key, _, value = item.partition("\n")
        m = _SUBMODULE_KEY.match(key)
        if m:
            sections.setdefault(m[1], {})[m[2].lower()] = value
    return sections
