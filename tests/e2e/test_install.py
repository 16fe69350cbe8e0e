"""The production install as README.md and docs/operations.md give it: a wheel built from the
repository, installed into a fresh virtualenv, runs from there and carries its SQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.env import ROOT, scrubbed_env

pytestmark = pytest.mark.e2e


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path) -> str:
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
    return out.stdout


def test_a_wheel_built_from_the_repository_installs_and_runs_in_a_fresh_virtualenv(
    app_dsn: str, tmp_path: Path
) -> None:
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", ROOT, "--no-deps", "--wheel-dir", tmp_path / "dist", "-q", cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ue_resync-*-py3-none-any.whl")
    # No pip in the new environment: this pip installs into it (--python), which saves the
    # seconds of ensurepip; the dependencies come from pip's cache.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    run(*pip, "--python", venv / "bin" / "python", "install", "-q", wheel, cwd=tmp_path)

    # The environment of an operator's shell: none of the checkout on PYTHONPATH.
    env = scrubbed_env(app_dsn)
    del env["PYTHONPATH"]
    ue_resync = venv / "bin" / "ue-resync"
    assert run(ue_resync, "--version", env=env, cwd=tmp_path).strip().startswith("ue-resync ")
    where = run(
        venv / "bin" / "python",
        "-c",
        "import ue_resync; print(ue_resync.__file__)",
        env=env,
        cwd=tmp_path,
    )
    assert Path(where.strip()).is_relative_to(venv), where
    printed = run(ue_resync, "migrate", "--print-sql", env=env, cwd=tmp_path)
    assert "CREATE SCHEMA" in printed
    # The same statements as the checkout's: the wheel carries all of sql/.
    assert printed == run(
        sys.executable,
        "-m",
        "ue_resync",
        "migrate",
        "--print-sql",
        env=scrubbed_env(app_dsn),
        cwd=tmp_path,
    )
