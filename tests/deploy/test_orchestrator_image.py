"""The orchestrator's image, started as Fly starts it but without what fly.toml and the secrets give
it, says in one line what is missing instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.deploy_files import ORCHESTRATOR_DOCKERFILE, env, exec_form


def test_the_image_without_its_fly_settings_names_what_is_missing(tmp_path: Path) -> None:
    image_env = env(ORCHESTRATOR_DOCKERFILE)
    assert image_env["PREVIEW_PROVIDER"] == "fly", "the orchestrator's image is the Fly orchestrator"
    command = exec_form(ORCHESTRATOR_DOCKERFILE, "CMD")
    assert command[0] == "velocity"
    started = subprocess.run(
        [str(Path(sys.executable).with_name("velocity")), *command[1:]],
        env={
            **image_env,
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "VELOCITY_DATA_DIR": str(tmp_path / "data"),
            "VELOCITY_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 2, started.stderr
    assert "Traceback" not in started.stderr + started.stdout
    assert (
        started.stderr.strip().splitlines()[-1]
        == "velocity: FLY_API_TOKEN is not set; see docs/fly.md#tokens"
    )
