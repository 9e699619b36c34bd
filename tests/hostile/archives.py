"""Project tarballs an attacker would upload, and a strategy that mixes them with random ones."""

from __future__ import annotations

import functools
import gzip
import io
import tarfile
from collections.abc import Callable

from hypothesis import strategies as st


def tarball(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    """A gzip tarball of ``members``; a regular file's bytes come from ``data`` by name."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            content = (data or {}).get(member.name, b"")
            member.size = len(content) if member.isfile() else 0
            archive.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return gzip.compress(raw.getvalue(), 9)


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def entry_bomb(entries: int) -> bytes:
    """Many empty entries: a few hundred KB that take seconds to read."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("a")
        for _ in range(entries):
            archive.addfile(info)
    return gzip.compress(raw.getvalue(), 9)


def size_bomb(size: int) -> bytes:
    """A package.json, then ``size`` zero bytes under a skipped directory: tiny, but huge to read."""
    package = tarfile.TarInfo("package.json")
    package.size = len(PACKAGE["package.json"])
    header = tarfile.TarInfo("node_modules/zeros")
    header.size = size
    raw = io.BytesIO()
    raw.write(package.tobuf(format=tarfile.USTAR_FORMAT))
    raw.write(PACKAGE["package.json"].ljust(tarfile.BLOCKSIZE, b"\0"))
    raw.write(header.tobuf(format=tarfile.USTAR_FORMAT))
    compressor = gzip.GzipFile(fileobj=(out := io.BytesIO()), mode="wb", compresslevel=9)
    compressor.write(raw.getvalue())
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        compressor.write(block)
    compressor.write(bytes(1024))  # the end-of-archive blocks
    compressor.close()
    return out.getvalue()


PACKAGE = {"package.json": b'{"name": "app"}'}
# Built when used: the two bombs take a while to make.
HOSTILE: dict[str, Callable[[], bytes]] = {
    "parent-path": lambda: tarball([member("package.json"), member("../escape.js")], PACKAGE),
    "absolute-path": lambda: tarball([member("package.json"), member("/etc/cron.d/x")], PACKAGE),
    "nested-parent-path": lambda: tarball([member("package.json"), member("src/../../x")], PACKAGE),
    "symlink-out": lambda: tarball(
        [member("package.json"), member("l", tarfile.SYMTYPE, "/etc/passwd")], PACKAGE
    ),
    "hardlink-out": lambda: tarball(
        [member("package.json"), member("h", tarfile.LNKTYPE, "/etc/passwd")], PACKAGE
    ),
    "device": lambda: tarball([member("package.json"), member("dev", tarfile.CHRTYPE)], PACKAGE),
    "fifo": lambda: tarball([member("package.json"), member("pipe", tarfile.FIFOTYPE)], PACKAGE),
    "no-files": lambda: tarball([member("src", tarfile.DIRTYPE)]),
    "not-gzip": lambda: b"PK\x03\x04 a zip, not a tarball",
    "truncated": lambda: tarball([member("package.json")], PACKAGE)[:40],
    "empty": lambda: b"",
    "entry-bomb": lambda: entry_bomb(25_000),  # past MAX_ARCHIVE_ENTRIES
    "size-bomb": lambda: size_bomb(256 << 20),  # past 4 x the default MAX_PROJECT_BYTES
}


@functools.cache
def small_hostile() -> list[bytes]:
    return [build() for name, build in HOSTILE.items() if not name.endswith("bomb")]


def gzip_bodies() -> st.SearchStrategy[bytes]:
    """Bodies for ``application/gzip``: the hostile archives, random tarballs, random bytes."""
    names = st.one_of(
        st.sampled_from(["package.json", "src/main.js", "..", "a/../b", "./x", "/abs", "x" * 300]),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), min_size=1, max_size=30),
    )
    files = st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=4)
    random_tarballs = files.map(lambda found: tarball([member(name) for name in found], found))
    return st.one_of(st.sampled_from(small_hostile()), random_tarballs, st.binary(max_size=256))
