"""Container image references (``registry/repository:tag@digest``), parsed the way Docker reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "registry-1.docker.io"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_REGISTRY = re.compile(
    r"^(?:localhost|[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}|[a-zA-Z0-9.-]+:\d+|\[[0-9a-fA-F:]+\](?::\d+)?)"
)


@dataclass(frozen=True, slots=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        """A digest, or a tag other than ``latest``: what a deploy should run, so rollbacks mean something."""
        return self.digest is not None or (self.tag is not None and self.tag != "latest")


def parse_image(reference: str) -> ImageReference:
    """Parse ``reference``; ``ValueError`` says what is wrong with it."""
    if not reference or reference != reference.strip() or " " in reference:
        raise ValueError("an image reference has no spaces, e.g. ghcr.io/org/preview-container:1.2.3")
    rest, _, digest = reference.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"digest {digest!r} is not algorithm:hex, e.g. sha256:0123…")
    first, slash, remainder = rest.partition("/")
    if slash and (_REGISTRY.fullmatch(first) or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    tag: str | None = None
    last_colon = path.rfind(":")
    if last_colon > path.rfind("/"):
        path, tag = path[:last_colon], path[last_colon + 1 :]
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} must be letters, digits, '_', '.', '-' (at most 128)")
    components = path.split("/")
    for component in components:
        if not _COMPONENT.match(component):
            raise ValueError(
                f"repository part {component!r} must be lowercase letters, digits and separators"
            )
    if registry == DEFAULT_REGISTRY and len(components) == 1:
        path = f"library/{path}"
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest or None)
