"""The one import that offers every loopback code-host fake (``fake_<host>.py``, one module a
host, each with its app and its ``CONTRACT``) and the machinery they share (``fake_http``).

``HOSTS`` holds the contract of every ``fake_*.py`` module that declares one, so a new host's
fake joins the contract suite by existing.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from enum_pipeline_tests.fake_gitea import GiteaApp
from enum_pipeline_tests.fake_github import GitHubApp
from enum_pipeline_tests.fake_gitlab import GitLabApp
from enum_pipeline_tests.fake_http import (
    BASE_TIME,
    FakeApp,
    FakeCodeHost,
    FakeSleep,
    Fault,
    HostContract,
    RecordedRequest,
    Reply,
    _link,
    quote_group,
    scan,
)

__all__ = [
    "BASE_TIME",
    "HOSTS",
    "FakeApp",
    "FakeCodeHost",
    "FakeSleep",
    "Fault",
    "GitHubApp",
    "GitLabApp",
    "GiteaApp",
    "HostContract",
    "RecordedRequest",
    "Reply",
    "_link",
    "quote_group",
    "scan",
]


def _contracts() -> list[HostContract]:
    folder = Path(__file__).resolve().parent
    found = []
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
        if info.name.startswith("fake_") and info.name not in ("fake_http", "fake_codehosts"):
            module = importlib.import_module(f"{__package__}.{info.name}")
            if isinstance(getattr(module, "CONTRACT", None), HostContract):
                found.append(module.CONTRACT)
    return found


#: Every host's contract, by name.
HOSTS: list[HostContract] = _contracts()
