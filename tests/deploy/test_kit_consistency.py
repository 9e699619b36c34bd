"""The deployment files agree with each other and with the settings: drift fails here first."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy.deploy_files import (
    GUIDE,
    ORCHESTRATOR_APP,
    ORCHESTRATOR_DOCKERFILE,
    PREVIEW_DOCKERFILE,
    PREVIEW_TEMPLATE,
    ROOT,
    WORKFLOWS,
    api_get_routes,
    arg_default,
    copy_sources,
    env,
    exec_form,
    exposed_ports,
    files_under,
    final_stage,
    fly_toml,
    healthcheck_url,
    ignore_file,
    path_filter_matches,
    project_files,
    run_scripts,
    sent_to_build,
    steps_using,
    workflow,
)
from velocity.agent import guest
from velocity.agent.guest import agent_command
from velocity.agent.identity import UserCode
from velocity.deploy import FORBIDDEN_ENV, PREVIEW_TEMPLATE_PATH, load_machine_template
from velocity.providers.local.bwrap import AGENT_ARGS
from velocity.settings import Settings

PREVIEW_WORKFLOW = "build-preview-container.yml"
DEPLOY_WORKFLOW = "deploy-orchestrator.yml"
SETTINGS_NAMES = {(f.description or "").split(":")[0] for f in Settings.model_fields.values()}
DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}


def health_path(url: str) -> str:
    return urlsplit(url.replace("%s", "0")).path


def test_the_preview_port_is_one_number_everywhere() -> None:
    """Image env and EXPOSE, template service and env, and the settings default: all 8080."""
    image_env = env(PREVIEW_DOCKERFILE)
    template = load_machine_template(PREVIEW_TEMPLATE)
    ports = {
        "Dockerfile ENV PORT": image_env["PORT"],
        "Dockerfile ENV CONTAINER_INTERNAL_PORT": image_env["CONTAINER_INTERNAL_PORT"],
        "Dockerfile EXPOSE": exposed_ports(PREVIEW_DOCKERFILE)[0],
        "fly.toml internal_port": template.internal_port,
        "fly.toml env PORT": template.env["PORT"],
        "fly.toml env CONTAINER_INTERNAL_PORT": template.env["CONTAINER_INTERNAL_PORT"],
        "settings CONTAINER_INTERNAL_PORT": DEFAULTS["container_internal_port"],
    }
    assert {str(port) for port in ports.values()} == {"8080"}, ports


def test_the_orchestrator_port_is_one_number_everywhere() -> None:
    """Its image's env and EXPOSE agree with the app's http_service and env."""
    app = load_machine_template(ORCHESTRATOR_APP)
    ports = {
        "Dockerfile ENV VELOCITY_PORT": env(ORCHESTRATOR_DOCKERFILE)["VELOCITY_PORT"],
        "Dockerfile EXPOSE": exposed_ports(ORCHESTRATOR_DOCKERFILE)[0],
        "fly.toml http_service.internal_port": app.internal_port,
        "fly.toml env VELOCITY_PORT": app.env["VELOCITY_PORT"],
    }
    assert len({str(port) for port in ports.values()}) == 1, ports


def test_the_preview_health_path_is_one_path_everywhere() -> None:
    """The image's HEALTHCHECK, the template's service check and the workflow's probe ask /health."""
    (validate,) = [
        s for s in workflow(PREVIEW_WORKFLOW)["jobs"]["build"]["steps"] if "HEALTH_PATH" in s.get("env", {})
    ]
    template = load_machine_template(PREVIEW_TEMPLATE)
    paths = {
        health_path(healthcheck_url(PREVIEW_DOCKERFILE)),
        template.health_path,
        validate["env"]["HEALTH_PATH"],
    }
    assert paths == {"/health"}
    assert urlsplit(validate["env"]["AGENT_URL"]).port == template.internal_port


def test_the_orchestrator_health_path_is_one_path_everywhere() -> None:
    """Its image's HEALTHCHECK and the app's http_service check ask a path the API serves."""
    path = health_path(healthcheck_url(ORCHESTRATOR_DOCKERFILE))
    assert path == load_machine_template(ORCHESTRATOR_APP).health_path
    assert path in api_get_routes()


def test_the_preview_image_name_is_one_name_everywhere() -> None:
    """Template, settings default, the workflow's registry and name, and every mention in the guide."""
    image = load_machine_template(PREVIEW_TEMPLATE).image
    assert image is not None
    repository = image.rpartition(":")[0]
    workflow_env = workflow(PREVIEW_WORKFLOW)["env"]
    mentioned = set(re.findall(r"ghcr\.io/[\w./-]+?(?=[:@\s`\"']|$)", GUIDE.read_text(encoding="utf-8")))
    assert DEFAULTS["preview_container_image"] == image
    assert f"{workflow_env['REGISTRY']}/{workflow_env['IMAGE_NAME']}" == repository
    assert mentioned == {repository}


def test_the_app_names_agree() -> None:
    """The preview app is the settings default; the orchestrator's app is the one its workflow deploys."""
    assert (
        load_machine_template(PREVIEW_TEMPLATE).app
        == DEFAULTS["fly_app_name"]
        == "velocity-preview-containers"
    )
    orchestrator = load_machine_template(ORCHESTRATOR_APP).app
    assert orchestrator == "velocity-orchestrator"
    assert f"--app {orchestrator}" in run_scripts(DEPLOY_WORKFLOW)


def test_the_orchestrator_env_names_are_settings() -> None:
    """Every [env] name of the orchestrator's app is a variable of ``velocity.settings`` (no typos)."""
    unknown = set(fly_toml(ORCHESTRATOR_APP)["env"]) - SETTINGS_NAMES
    assert not unknown


def test_the_secrets_the_guide_sets_are_settings() -> None:
    """Each NAME= in the guide's `fly secrets set` commands is a variable the orchestrator reads."""
    code = "\n".join(
        re.findall(r"^```bash\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    )
    blocks = re.findall(r"fly secrets set(?:[^\n]*\\\n)*[^\n]*", code)
    names = {name for block in blocks for name in re.findall(r"\b([A-Z][A-Z0-9_]+)=", block)}
    assert {"FLY_API_TOKEN", "DATABASE_URL", "SUPABASE_URL", "SUPABASE_ANON_KEY"} <= names
    assert names <= SETTINGS_NAMES


@pytest.mark.parametrize(
    "path",
    [*project_files("fly.toml"), *project_files("Dockerfile")],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_no_secret_is_set_in_a_fly_toml_or_an_image(path: Path) -> None:
    """Tokens and database URLs are secrets of the orchestrator, never plain env or image layers."""
    names = set(fly_toml(path).get("env", {})) if path.suffix == ".toml" else set(env(path))
    assert FORBIDDEN_ENV.isdisjoint(names)
    assert not {n for n in names if re.search(r"TOKEN|SECRET|PASSWORD|_KEY$", n)}


def test_the_image_and_the_template_give_the_agent_the_same_env() -> None:
    """Where both set a variable (PORT, NODE_ENV...), they set the same value."""
    image_env = env(PREVIEW_DOCKERFILE)
    template_env = load_machine_template(PREVIEW_TEMPLATE).env
    shared = set(image_env) & set(template_env)
    assert {"PORT", "CONTAINER_INTERNAL_PORT", "NODE_ENV"} <= shared
    assert {n: image_env[n] for n in shared} == {n: template_env[n] for n in shared}


@pytest.mark.parametrize(
    ("workflow_name", "dockerfile", "extra"),
    [
        (PREVIEW_WORKFLOW, PREVIEW_DOCKERFILE, ["preview-container/Dockerfile.dockerignore"]),
        (DEPLOY_WORKFLOW, ORCHESTRATOR_DOCKERFILE, [".dockerignore", "fly.toml"]),
    ],
)
def test_the_workflow_path_filters_cover_every_file_the_image_copies(
    workflow_name: str, dockerfile: Path, extra: list[str]
) -> None:
    """A change to any file the build copies (or to the build's own files) triggers the workflow."""
    wanted = [
        *[f for source in copy_sources(dockerfile) for f in files_under(source)],
        dockerfile.relative_to(ROOT).as_posix(),
        f".github/workflows/{workflow_name}",
        *extra,
    ]
    events = {k: v for k, v in workflow(workflow_name)["on"].items() if isinstance(v, dict) and "paths" in v}
    assert "push" in events
    for event, trigger in events.items():
        missed = [f for f in wanted if not any(path_filter_matches(p, f) for p in trigger["paths"])]
        assert not missed, f"{workflow_name} on {event} does not watch {missed}"


def test_the_preview_workflow_builds_the_preview_dockerfile_from_the_root() -> None:
    """The build context is the repository root and the Dockerfile the one under preview-container/."""
    (build,) = steps_using(PREVIEW_WORKFLOW, "docker/build-push-action")
    assert build["with"]["context"] == "."
    assert build["with"]["file"] == PREVIEW_DOCKERFILE.relative_to(ROOT).as_posix()
    assert build["with"]["platforms"] == "linux/amd64"


@pytest.mark.parametrize(
    "dockerfile", [PREVIEW_DOCKERFILE, ORCHESTRATOR_DOCKERFILE], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_every_file_the_image_copies_exists_and_reaches_the_build(dockerfile: Path) -> None:
    """Each COPY source is in the repository and let through by the build's ignore file."""
    ignore = ignore_file(dockerfile)
    for source in copy_sources(dockerfile):
        files = files_under(source)
        assert files, f"{source} is copied by {dockerfile.name} but does not exist"
        blocked = [f for f in files if not sent_to_build(ignore, f)]
        assert not blocked, f"{ignore.name} keeps {blocked} from the build"


@pytest.mark.parametrize(
    "dockerfile", [PREVIEW_DOCKERFILE, ORCHESTRATOR_DOCKERFILE], ids=lambda p: p.relative_to(ROOT).as_posix()
)
@pytest.mark.parametrize(
    "private",
    [".env", ".velocity/velocity.db", ".venv/bin/python", "examples/react-vite/node_modules/vite/x.js"],
)
def test_local_state_and_secrets_never_reach_a_build(dockerfile: Path, private: str) -> None:
    """The ignore files let through only what the Dockerfile copies."""
    assert not sent_to_build(ignore_file(dockerfile), private)


def test_the_orchestrator_image_carries_the_preview_template() -> None:
    """The orchestrator reads preview-container/fly.toml at start, so its image copies it."""
    assert PREVIEW_TEMPLATE_PATH in copy_sources(ORCHESTRATOR_DOCKERFILE)
    assert (ROOT / PREVIEW_TEMPLATE_PATH) == PREVIEW_TEMPLATE


def test_the_image_starts_the_agent_the_way_the_local_sandbox_does() -> None:
    """CMD is ``python -m velocity.agent.guest`` (the agent's virtualenv first on PATH, no ENTRYPOINT),
    which makes the machine safe and then executes the module the local provider runs after its own
    interpreter."""
    cmd = exec_form(PREVIEW_DOCKERFILE, "CMD")
    assert cmd == ["python", "-m", "velocity.agent.guest"]
    assert env(PREVIEW_DOCKERFILE)["PATH"].startswith("/opt/velocity/bin:")
    with pytest.raises(AssertionError, match="no ENTRYPOINT"):
        exec_form(PREVIEW_DOCKERFILE, "ENTRYPOINT")
    assert importlib.util.find_spec(cmd[2]) is not None
    assert tuple(agent_command(UserCode(10001, 10001))[-2:]) == AGENT_ARGS[-2:]
    assert "preview-container/firewall.nft" in copy_sources(PREVIEW_DOCKERFILE)


def test_a_deploy_keeps_the_previews_running() -> None:
    """The kit deploys two orchestrator machines (``fly deploy``'s default, never ``--ha=false``),
    one at a time (``--strategy rolling``: the other serves meanwhile); the settings refuse Fly
    without DATABASE_URL, so the two share PostgreSQL. The image's ``serve`` leaves previews running
    on the SIGTERM every deploy sends, for the replicas to adopt."""
    assert exec_form(ORCHESTRATOR_DOCKERFILE, "CMD") == ["velocity", "serve", "--keep-previews"]
    guide_commands = re.findall(r"^```bash\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.M | re.S)
    deploys = [
        line
        for text in (run_scripts(DEPLOY_WORKFLOW), *guide_commands)
        for line in text.splitlines()
        if re.match(r"\s*(fly|flyctl) deploy\b", line)
    ]
    assert deploys
    for line in deploys:
        assert "--ha=false" not in line and "--strategy rolling" in line, line


def test_user_code_runs_as_an_unprivileged_user() -> None:
    """The orchestrator's image ends as a numeric, non-root user. The preview image ends as root for
    its entrypoint alone, which becomes the agent's uid (10002) and starts the project's code as the
    image's ``preview`` user (10001): both users are made in the image with those ids
    (tests/hostile/test_fly_guest.py runs the entrypoint)."""
    users = [i.arguments for i in final_stage(ORCHESTRATOR_DOCKERFILE) if i.keyword == "USER"]
    assert users, f"{ORCHESTRATOR_DOCKERFILE} never leaves root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    preview = [i.arguments for i in final_stage(PREVIEW_DOCKERFILE) if i.keyword == "USER"]
    assert preview[-1] == "0:0" and exec_form(PREVIEW_DOCKERFILE, "CMD")[2] == "velocity.agent.guest"
    text = PREVIEW_DOCKERFILE.read_text()
    assert f"useradd --uid {guest.AGENT_UID} --gid 10001" in text
    assert guest.DEFAULT_USER == "10001:10001" and "useradd --uid 10001 --user-group" in text


def test_the_toolchain_versions_agree() -> None:
    """Node.js 20 and Python 3.11 in the images and in CI."""
    ci_steps = {
        step.get("uses", "").split("@")[0]: step for step in workflow("ci.yml")["jobs"]["test"]["steps"]
    }
    assert (
        arg_default(PREVIEW_DOCKERFILE, "NODE_MAJOR")
        == ci_steps["actions/setup-node"]["with"]["node-version"]
    )
    for dockerfile in (PREVIEW_DOCKERFILE, ORCHESTRATOR_DOCKERFILE):
        assert (
            arg_default(dockerfile, "PYTHON_VERSION")
            == ci_steps["actions/setup-python"]["with"]["python-version"]
        )


def test_ci_runs_the_readme_s_test_command() -> None:
    """``make test`` is what CI runs, and the deploy waits for it."""
    assert "make test" in run_scripts("ci.yml")
    assert "workflow_call" in workflow("ci.yml")["on"]
    deploy = workflow(DEPLOY_WORKFLOW)["jobs"]
    assert deploy["test"]["uses"] == "./.github/workflows/ci.yml"
    assert deploy["deploy"]["needs"] == "test"


def test_the_deploy_waits_for_an_approval_through_its_environment() -> None:
    """The deploy job runs in the protected ``production`` environment, and only on main."""
    deploy = workflow(DEPLOY_WORKFLOW)
    assert deploy["jobs"]["deploy"]["environment"]["name"] == "production"
    assert deploy["on"]["push"]["branches"] == ["main"]
    assert "pull_request" not in deploy["on"]


def test_the_preview_workflow_pushes_with_its_own_token_and_never_on_pull_requests() -> None:
    """GITHUB_TOKEN with ``packages: write``; push, login and the pushed digest only outside pull requests."""
    job = workflow(PREVIEW_WORKFLOW)["jobs"]["build"]
    assert job["permissions"]["packages"] == "write"
    (login,) = steps_using(PREVIEW_WORKFLOW, "docker/login-action")
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert job["env"]["PUSH"] == "${{ github.event_name != 'pull_request' }}"
    (build,) = steps_using(PREVIEW_WORKFLOW, "docker/build-push-action")
    assert (
        "push-by-digest=true" in build["with"]["outputs"] and "env.PUSH == 'true'" in build["with"]["outputs"]
    )
    assert build["with"]["cache-from"] == "type=gha"
    assert ":latest" not in run_scripts(PREVIEW_WORKFLOW)
    assert "steps.build.outputs.digest" in str(job["steps"])


def test_the_preview_workflow_tags_only_a_digest_that_passed_validation() -> None:
    """The build pushes no tag; the tags (``:latest`` on main among them) move to the pushed digest in
    a step after the validation, so a red job leaves every tag where it was."""
    steps = workflow(PREVIEW_WORKFLOW)["jobs"]["build"]["steps"]
    names = [step.get("name", "") for step in steps]
    (build,) = steps_using(PREVIEW_WORKFLOW, "docker/build-push-action")
    assert "tags" not in build["with"], "the build itself tags nothing"
    validate = names.index("Validate the image that was just built")
    (tagging,) = [i for i, step in enumerate(steps) if "imagetools create" in step.get("run", "")]
    assert tagging > validate
    assert steps[tagging]["if"] == "env.PUSH == 'true'"
    assert "steps.build.outputs.digest" in steps[tagging]["env"]["DIGEST_REF"]
    assert steps[tagging]["env"]["TAGS"] == "${{ steps.meta.outputs.tags }}"


def test_the_preview_workflow_waits_for_the_agent_through_every_early_error() -> None:
    """Before the agent listens, curl gets "connection reset" or "empty reply", which plain
    ``--retry`` (and ``--retry-connrefused``) does not retry: every call retries all errors, with a
    deadline."""
    calls = re.findall(r"curl [^|]*", run_scripts(PREVIEW_WORKFLOW).replace("\\\n", " "))
    assert calls
    for call in calls:
        assert "--retry-all-errors" in call and "--retry-max-time" in call, call


def test_the_guide_names_only_files_that_exist() -> None:
    """Each repository path in backquotes in docs/deploy-fly.md is a file of the repository."""
    guide = GUIDE.read_text(encoding="utf-8")
    named = set(
        re.findall(
            r"`((?:[\w.-]+/)*(?:[\w-]+\.(?:toml|yml|md|json|py)|Dockerfile[\w.]*|\.dockerignore))`", guide
        )
    )
    assert len(named) > 5
    # A bare name (``ci.yml``) is enough where the text around it says which folder.
    assert not [n for n in named if not ((ROOT / n).exists() or ("/" not in n and project_files(n)))]


def test_the_guide_walks_through_steps_one_to_ten() -> None:
    """The seed's ten steps are all there, in order, with the Tokens section errors point to."""
    headings = re.findall(r"^## (.+)$", GUIDE.read_text(encoding="utf-8"), re.MULTILINE)
    steps = [int(m[1]) for h in headings if (m := re.match(r"Step (\d+):", h))]
    assert steps == list(range(1, 11))
    assert "Tokens" in headings


def test_nothing_points_at_the_seed_s_orchestrator_preview_container_folder() -> None:
    """The preview image lives in preview-container/ and every file says so."""
    kit = [GUIDE, ORCHESTRATOR_APP, ORCHESTRATOR_DOCKERFILE, PREVIEW_DOCKERFILE, *WORKFLOWS.glob("*.yml")]
    assert not [p for p in kit if "orchestrator/preview-container" in p.read_text(encoding="utf-8")]
