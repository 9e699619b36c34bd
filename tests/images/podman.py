"""The images, built and run with podman: stand-ins for the official base images, made from Debian's
packages, and the two Dockerfiles built on them exactly as the workflows build them.

The stand-ins (docs/deploy-fly.md, "The images in the test suite"): a Debian bookworm root made by
``mmdebstrap``, with Node.js 20 (this machine's) laid out as ``node:20-bookworm-slim`` lays it out
(``/usr/local/bin/node``, npm and corepack in ``/usr/local/lib/node_modules``), and CPython 3.11 (the
interpreter running the suite) laid out as ``python:3.11-slim-bookworm`` lays it out (everything
under ``/usr/local``, the runtime libraries from Debian's packages). They are tagged with the short
names the Dockerfiles' ``FROM`` lines use, under ``localhost/``, and cached between runs under the
data directory (``.velocity/cache/images``), keyed by what went into them.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "2"  # bump when the stand-ins' recipe changes: a new cache key
LABEL = "velocity.standin"
NODE_BASE = "localhost/node:20-bookworm-slim"
PYTHON_BASE = "localhost/python:3.11-slim-bookworm"
PREVIEW_IMAGE = "localhost/velocity-test/preview-container:suite"
ORCHESTRATOR_IMAGE = "localhost/velocity-test/orchestrator:suite"

# What python:3.11-slim-bookworm installs from Debian: certificates, netbase and tzdata, and the
# runtime libraries of the interpreter and its extension modules (no Tk).
PYTHON_PACKAGES = [
    "ca-certificates",
    "netbase",
    "tzdata",
    "libbz2-1.0",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libtirpc3",
    "libnsl2",
    "libuuid1",
    "zlib1g",
    "libcrypt1",
]
# node:20-bookworm-slim adds nothing from Debian but what Node.js links (libstdc++, with apt).
NODE_PACKAGES = ["ca-certificates"]  # only to trust the proxy's authority (EXTRA_CAS)
# This machine reaches the registries through a proxy with its own certificate authority: the
# stand-ins trust what the machine trusts, as a build host's base images would behind such a proxy.
EXTRA_CAS = Path("/usr/local/share/ca-certificates")
TRUST_CHANGES = [
    "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
    "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
]
PODMAN_NPROC = 32768  # the hard limit podman leaves its containers' runtime
PYTHON_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "__pycache__", "lib2to3/tests")


class PodmanUnavailable(Exception):
    """Why this machine cannot build or run the images (the reason the tests skip)."""


@dataclass(frozen=True, slots=True)
class Base:
    tag: str
    packages: list[str]
    hook: str  # mmdebstrap --customize-hook: lays the runtime out in "$1"
    changes: list[str]  # podman import --change
    inputs: str  # what the cache key covers besides the recipe

    @property
    def key(self) -> str:
        cas = sorted((p.name, p.read_text()) for p in EXTRA_CAS.glob("*.crt"))
        text = json.dumps([RECIPE, self.tag, self.packages, self.hook, self.changes, self.inputs, cas])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def podman_env(directory: Path) -> dict[str, str]:
    """Podman's environment: runc, and open-file limits this machine lets a container set.

    Podman asks for 1,048,576 open files by default, and lowers its own process limit to 32,768;
    without CAP_SYS_RESOURCE (as here, in a container) runc cannot raise a limit and every
    container would fail to start.
    """
    _, files = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, processes = resource.getrlimit(resource.RLIMIT_NPROC)
    processes = min(processes, PODMAN_NPROC)
    conf = directory / "containers.conf"
    directory.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={files}:{files}", "nproc={processes}:{processes}"]\n\n'
        '[engine]\nruntime = "runc"\n'
    )
    return os.environ | {"CONTAINERS_CONF": str(conf)}


def run(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 900, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:3])}… exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def usable(env: dict[str, str]) -> None:
    """Raise ``PodmanUnavailable`` naming what is missing or cannot run here."""
    missing = [tool for tool in ("podman", "buildah", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        raise PodmanUnavailable(f"not installed: {', '.join(missing)} (scripts/setup installs them)")
    probe = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        raise PodmanUnavailable(f"podman cannot run here: {probe.stderr.strip()[-500:]}")


def node_base() -> Base:
    node = Path(shutil.which("node") or "/usr/bin/node").resolve()
    modules = node.parent.parent / "lib" / "node_modules"
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout
    hook = (
        'set -e; install -d "$1/usr/local/bin" "$1/usr/local/lib/node_modules"; '
        f'cp {node} "$1/usr/local/bin/node"; '
        f'cp -a {modules}/npm {modules}/corepack "$1/usr/local/lib/node_modules/"; '
        'ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"; '
        'ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"; '
        'ln -s ../lib/node_modules/corepack/dist/corepack.js "$1/usr/local/bin/corepack"; '
        'chroot "$1" groupadd --gid 1000 node; '
        'chroot "$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
    )
    changes = [f"ENV NODE_VERSION={version.strip().lstrip('v')}", 'CMD ["node"]']
    return Base(NODE_BASE, NODE_PACKAGES, hook, changes, version)


def python_base() -> Base:
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = stdlib / "site-packages"
    libdir = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib")
    excludes = " ".join(f"--exclude={p}" for p in PYTHON_SKIP)
    pip = sorted(p.name for p in site.glob("pip*") if p.name == "pip" or p.name.startswith("pip-"))
    hook = (
        'set -e; install -d "$1/usr/local/bin" "$1/usr/local/lib/python{v}/site-packages" "$1/usr/local/include"; '
        'cp {prefix}/bin/python{v} "$1/usr/local/bin/"; '
        'cp -a {libdir}/libpython{v}.so* {libdir}/libpython3.so "$1/usr/local/lib/"; '
        'tar -C {stdlib} {excludes} --exclude=site-packages -cf - . | tar -C "$1/usr/local/lib/python{v}" -xf -; '
        'tar -C {site} -cf - {pip} | tar -C "$1/usr/local/lib/python{v}/site-packages" -xf -; '
        'cp -a {prefix}/include/python{v} "$1/usr/local/include/"; '
        'ln -s python{v} "$1/usr/local/bin/python3"; ln -s python3 "$1/usr/local/bin/python"; '
        "printf '#!/usr/local/bin/python{v}\\nimport sys\\nfrom pip._internal.cli.main import main\\nsys.exit(main())\\n' "
        '> "$1/usr/local/bin/pip3"; chmod 755 "$1/usr/local/bin/pip3"; ln -s pip3 "$1/usr/local/bin/pip"; '
        'chroot "$1" ldconfig; chroot "$1" /usr/local/bin/python3 -c "import ssl, sqlite3, ctypes, lzma, bz2, venv"'
    ).format(
        v=version,
        prefix=prefix,
        libdir=libdir,
        stdlib=stdlib,
        site=site,
        excludes=excludes,
        pip=" ".join(pip),
    )
    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={sys.version.split()[0]}",
        'CMD ["python3"]',
    ]
    return Base(PYTHON_BASE, PYTHON_PACKAGES, hook, changes, sys.version)


def cache_dir() -> Path:
    return Path(os.environ.get("VELOCITY_DATA_DIR") or ROOT / ".velocity").resolve() / "cache" / "images"


def _present(base: Base, env: dict[str, str]) -> bool:
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', base.tag],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return found.returncode == 0 and found.stdout.strip() == base.key


def ensure_base(base: Base, env: dict[str, str]) -> None:
    """The stand-in in podman's storage, from the cached root or a new one."""
    if _present(base, env):
        return
    tarball = cache_dir() / f"{base.tag.split('/')[-1].replace(':', '-')}-{base.key}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        include = [f"--include={','.join(base.packages)}"] if base.packages else []
        trust = f'cp {EXTRA_CAS}/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true; chroot "$1" update-ca-certificates'

        run(
            [
                "mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", *include,
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                f"--customize-hook={trust}", f"--customize-hook={base.hook}", "bookworm", str(partial),
            ],
            env,
        )  # fmt: skip
        partial.rename(tarball)
    changes = [*base.changes, *TRUST_CHANGES, f"LABEL {LABEL}={base.key}"]
    run(["podman", "import", *(f"--change={c}" for c in changes), str(tarball), base.tag], env)


def ensure_bases(env: dict[str, str]) -> None:
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(ensure_base, base, env) for base in (node_base(), python_base())]:
            done.result()


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a workflow builds an image: its Dockerfile and context, relative to the repository."""

    dockerfile: str
    context: str

    @property
    def ignorefile(self) -> str:
        """The ignore list BuildKit reads: ``<Dockerfile>.dockerignore`` beside the Dockerfile if it
        exists, else the context's ``.dockerignore``."""
        beside = ROOT / f"{self.dockerfile}.dockerignore"
        if beside.exists():
            return str(beside.relative_to(ROOT))
        return str(Path(self.context) / ".dockerignore")


def preview_recipe() -> Recipe:
    """The preview image as build-preview-container.yml builds it (docker/build-push-action)."""
    from ruamel.yaml import YAML

    workflow = YAML(typ="safe").load((ROOT / ".github/workflows/build-preview-container.yml").read_text())
    (step,) = [
        s
        for s in workflow["jobs"]["build"]["steps"]
        if str(s.get("uses", "")).startswith("docker/build-push-action")
    ]
    return Recipe(step["with"]["file"], step["with"]["context"])


def orchestrator_recipe() -> Recipe:
    """The orchestrator's image as ``flyctl deploy`` builds it: fly.toml's [build] dockerfile, the
    directory of fly.toml as the context."""
    import tomllib

    return Recipe(tomllib.loads((ROOT / "fly.toml").read_text())["build"]["dockerfile"], ".")


def build(recipe: Recipe, tag: str, env: dict[str, str]) -> float:
    """Build as the workflow does (its Dockerfile, context and ignore list), the bases never pulled
    (they are the stand-ins); the seconds it took."""
    began = time.monotonic()
    run(
        [
            "podman", "build", "--pull=never", "--layers", "--file", recipe.dockerfile,
            "--ignorefile", recipe.ignorefile, "--tag", tag, recipe.context,
        ],
        env,
        timeout=1500,
    )  # fmt: skip
    return time.monotonic() - began


def image_size(tag: str, env: dict[str, str]) -> int:
    out = run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], env).stdout
    return int(out.strip())
