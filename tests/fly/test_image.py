"""Image references, read the way Docker reads them; the doctor and the emulator rely on it."""

from __future__ import annotations

import pytest

from velocity.fly.image import ImageReference, parse_image


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "ghcr.io/velocity/preview-container:1.2.3",
            ("ghcr.io", "velocity/preview-container", "1.2.3", None),
        ),
        ("ubuntu", ("registry-1.docker.io", "library/ubuntu", None, None)),
        ("registry.fly.io/app:deployment-01H", ("registry.fly.io", "app", "deployment-01H", None)),
        ("localhost:5000/a/b", ("localhost:5000", "a/b", None, None)),
        ("org/image@sha256:" + "a" * 64, ("registry-1.docker.io", "org/image", None, "sha256:" + "a" * 64)),
    ],
)
def test_well_formed_references_are_split_into_their_parts(
    reference: str, expected: tuple[object, ...]
) -> None:
    """Registry (Docker Hub when absent), repository, tag and digest."""
    ref = parse_image(reference)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(
    "reference",
    ["", "Ghcr.io/Org/Image:1", "image:bad tag", "image:", "repo/UPPER", "image@md5:zz", " image"],
)
def test_malformed_references_say_what_is_wrong(reference: str) -> None:
    """Uppercase repositories, spaces, empty tags and bad digests are refused."""
    with pytest.raises(ValueError, match=r".+"):
        parse_image(reference)


def test_only_a_digest_or_a_fixed_tag_is_pinned() -> None:
    """``latest`` and no tag float; a version tag or a digest does not."""
    assert not ImageReference("r", "a", "latest", None).pinned
    assert not ImageReference("r", "a", None, None).pinned
    assert ImageReference("r", "a", "1.0", None).pinned
    assert ImageReference("r", "a", None, "sha256:x").pinned
