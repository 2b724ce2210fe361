"""Credential redaction and remote normalisation (enum_pipeline.sources.remotes)."""

from __future__ import annotations

import pytest

from enum_pipeline.sources.remotes import REDACTED, normalize_remote, redact_url

# Fake, short secrets: nothing here looks like a real token.
SECRET_URLS = [
    ("https://user:token@host/x.git", "token", "https://***@host/x.git"),
    (
        "https://x-access-token:abc@github.com/o/r.git",
        "abc",
        "https://***@github.com/o/r.git",
    ),
    (
        "https://oauth2:glpat-FAKE@gitlab.com/g/r.git",
        "glpat-FAKE",
        "https://***@gitlab.com/g/r.git",
    ),
    ("https://FAKETOKEN@github.com/o/r.git", "FAKETOKEN", "https://***@github.com/o/r.git"),
    ("http://u:p%40ss@host:8080/o/r", "p%40ss", "http://***@host:8080/o/r"),
    ("https://u:pa@ss@host/o/r", "pa@ss", "https://***@host/o/r"),
    ("ssh://git:sekret@host/o/r.git", "sekret", "ssh://***@host/o/r.git"),
    ("u:sekret@host:o/r.git", "sekret", "***@host:o/r.git"),
    (
        "https://host/o/r.git?private_token=FAKE1&ref=main",
        "FAKE1",
        "https://host/o/r.git?private_token=***&ref=main",
    ),
    # remote helpers: "<transport>::<address>"
    ("hg::https://user:hgsekret@hg.example/r", "hgsekret", "hg::https://***@hg.example/r"),
    (
        "persistent-https::https://FAKETOK2@host/o/r",
        "FAKETOK2",
        "persistent-https::https://***@host/o/r",
    ),
    ("git+ssh://user:sshsekret@host/o/r.git", "sshsekret", "git+ssh://***@host/o/r.git"),
    ("ssh+git://user:sshsekret@host/o/r.git", "sshsekret", "ssh+git://***@host/o/r.git"),
]


@pytest.mark.parametrize(("url", "secret", "expected"), SECRET_URLS)
def test_redact_removes_credentials(url: str, secret: str, expected: str) -> None:
    out = redact_url(url)
    assert out == expected
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:org/repo.git",
        "https://host/org/repo@v1",
        "https://github.com/org/repo.git",
        "ssh://git@host:2222/org/repo.git",
        "/srv/git/repo.git",
        "file:///srv/git/repo.git",
        "../sibling",
        "",
    ],
)
def test_redact_leaves_clean_urls_alone(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/org/repo.git", "github.com/org/repo"),
        ("https://github.com/org/repo", "github.com/org/repo"),
        ("https://GitHub.COM/Org/Repo.git/", "github.com/Org/Repo"),
        ("https://user:token@host/x.git", "host/x"),
        ("https://host:8443/org/repo.git", "host/org/repo"),
        ("http://host/org/repo", "host/org/repo"),
        ("git@github.com:org/repo.git", "github.com/org/repo"),
        ("git@github.com:org/repo", "github.com/org/repo"),
        ("github.com:org/repo.git", "github.com/org/repo"),
        ("ssh://git@github.com/org/repo.git", "github.com/org/repo"),
        (
            "ssh://git@gitlab.example.com:2222/group/sub/repo.git",
            "gitlab.example.com/group/sub/repo",
        ),
        ("git+ssh://git@host/org/repo", "host/org/repo"),
        ("git://host.example/org/repo.git", "host.example/org/repo"),
        ("https://[::1]:8080/org/repo.git", "[::1]/org/repo"),
        ("https://host/org/repo.git?ref=x#frag", "host/org/repo"),
    ],
)
def test_normalize_remote(url: str, expected: str) -> None:
    assert normalize_remote(url) == expected


def test_https_and_ssh_forms_agree() -> None:
    forms = [
        "https://github.com/acme/widget.git",
        "https://x-access-token:abc@github.com/acme/widget",
        "git@github.com:acme/widget.git",
        "ssh://git@github.com:22/acme/widget.git",
    ]
    assert {normalize_remote(u) for u in forms} == {"github.com/acme/widget"}


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/srv/git/repo.git",
        "./repo",
        "../repo",
        "~/repo",
        "file:///srv/x.git",
        "C:/x/y",
        "C:\\x\\y",
        "https://github.com/",
        "https://github.com/.git",
        "nonsense",
    ],
)
def test_normalize_remote_rejects_local_and_empty(url: str) -> None:
    assert normalize_remote(url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("hg::https://user:hgsekret@hg.example/team/r", "hg.example/team/r"),
        ("hg::ssh://hg@hg.example/r", "hg.example/r"),
        ("git+ssh://user:sshsekret@host/o/r.git", "host/o/r"),
    ],
)
def test_normalize_remote_helper_addresses(url: str, expected: str) -> None:
    assert normalize_remote(url) == expected
    assert "sekret" not in (normalize_remote(url) or "")
