"""URL handling: canonical forms, credentials, registry paths, input kinds."""
import pytest

from datalad_registry_ext.records import (
    canonical_url,
    has_credentials,
    registry_path_for_url,
    strip_credentials,
)
from datalad_registry_ext.registration import InputError, resolve_input


@pytest.mark.parametrize("variants", [
    ["https://github.com/o/r", "https://github.com/o/r/",
     "https://github.com/o/r.git", "https://github.com/o/r.git/",
     "HTTPS://GitHub.com/o/r", "https://user:tok@github.com/o/r.git"],
    ["git@github.com:o/r.git", "git@github.com:o/r", "git@GITHUB.com:o/r/"],
    ["ssh://git@host.org/o/r.git", "ssh://git@host.org/o/r/"],
    ["/data/ds", "/data/ds/", "file:///data/ds", "file:///data/ds/"],
    ["/data/ds.git", "file:///data/ds.git", "/data/ds.git/"],
])
def test_variants_are_one_repository(variants):
    assert len({canonical_url(v) for v in variants}) == 1


def test_different_repositories_stay_different():
    assert canonical_url("https://github.com/o/r") != canonical_url(
        "https://github.com/o/R2")
    # two local directories are two repositories, whatever their names
    assert canonical_url("/p/twin") != canonical_url("/p/twin.git")
    assert canonical_url("https://a.org/x") != canonical_url("https://b.org/x")


@pytest.mark.parametrize("url, public", [
    ("https://user:token@host/x", "https://host/x"),
    ("https://token@host/x", "https://host/x"),
    ("http://u:p@127.0.0.1:8080/x.git", "http://127.0.0.1:8080/x.git"),
    ("ssh://git@host/x", "ssh://git@host/x"),          # a user name is no secret
    ("ssh://git:pw@host/x", "ssh://git@host/x"),
    ("https://host/x", "https://host/x"),
    ("git@host:o/r", "git@host:o/r"),
])
def test_strip_credentials(url, public):
    assert strip_credentials(url) == public
    assert has_credentials(url) == (url != public)


@pytest.mark.parametrize("url, path", [
    ("https://github.com/OpenNeuroDatasets/ds000001",
     "github.com/OpenNeuroDatasets/ds000001"),
    ("https://github.com/OpenNeuroDatasets/ds000001.git",
     "github.com/OpenNeuroDatasets/ds000001"),
    ("git@gin.g-node.org:/user/repo.git", "gin.g-node.org/user/repo"),
    ("ssh://git@example.org:2222/a/b", "example.org_2222/a/b"),
    ("/home/me/data/.hidden", "local/home/me/data/hidden"),
    ("file:///srv/ds", "local/srv/ds"),
    ("https://host/we ird/na#me", "host/we_ird/na"),
])
def test_registry_path_is_readable(url, path):
    assert registry_path_for_url(url) == path


def test_resolve_input_kinds(tmp_path):
    c = resolve_input("https://u:secret@github.com/o/r.git/")
    assert c.source == "https://u:secret@github.com/o/r.git/"   # used to clone
    assert c.url == "https://github.com/o/r.git"                 # what is stored
    assert "secret" not in c.url
    c = resolve_input("git@github.com:o/r.git")
    assert c.url == c.source == "git@github.com:o/r.git"
    c = resolve_input("ssh://git@example.org/o/r")
    assert c.url == "ssh://git@example.org/o/r"
    with pytest.raises(InputError, match="scheme 'ftp'"):
        resolve_input("ftp://example.org/x")
    with pytest.raises(InputError, match="no such path"):
        resolve_input(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="empty"):
        resolve_input("  ")
