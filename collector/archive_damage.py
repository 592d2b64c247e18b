"""Damaged archive files, told apart from files a crash cut short.

A collector killed while writing leaves a day file that simply ends early: its last gzip member
has no trailer, and everything before the cut reads (a warning, as any crash leaves). Damage is
something else: a CRC or length check that fails, deflate data the inflater refuses, a gzip
member that is not one. Then the bytes past the damage cannot be read, and those already read
from the file may themselves be altered (a flipped bit inside deflate data can decode to other
valid text until a check catches it), so a replay, report or month close from that archive
would be wrong: the reader stops with :class:`ArchiveDamaged`, which names the file and the byte
where the inflater found the damage (the damage itself is at or before it).

A power cut can leave a third kind of end: the file's last blocks allocated but never written,
read back as zero bytes. Inflated, zeros are not always refused: after a cut mid-batch they can
decode as copies of earlier text, records read twice or made up. So the zeros ending a file are
inflated only when they complete its last gzip member (its trailer's CRC and size check out);
otherwise the file is read up to them, as cut short there (:class:`ZeroTail`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from .errors import ArchiveError

READ_BYTES = 1 << 16


class ArchiveDamaged(ArchiveError):
    """An archive file whose gzip data is corrupt (not merely cut short)."""

    def __init__(self, path: Path, cause: Exception, found: tuple[int, int] | None, size: int, *, lineno: int,
                 first_bad_line: int | None) -> None:
        self.path, self.cause, self.found = path, cause, found
        if found is None:
            where = f"({size:,} bytes)"
        elif "check" in str(cause):  # a CRC or length check at a member's end: the damage is in the member
            where = f"at byte {found[1]:,} of {size:,}, the end of the gzip member from byte {found[0]:,}"
        else:
            where = f"at byte {found[1]:,} of {size:,}"
        garbled = f"; its first line that is no archive record is line {first_bad_line:,}" if first_bad_line else ""
        super().__init__(
            f"{path}: archive is damaged {where} ({cause}): corrupt data, not the cut-short end a crash while writing "
            f"leaves. Read up to line {lineno:,}{garbled}; lines before the damage may be altered too, so nothing "
            "computed from this file can be trusted: restore it from a copy (a backup, or another machine's copy)")


class ZeroTail(EOFError):
    """The file ends in zero bytes, which are not read."""

    def __init__(self, zeros: int, size: int) -> None:
        super().__init__(f"it ends in {zeros:,} zero bytes from byte {size - zeros:,} of {size:,}, as a power cut "
                         "while writing can leave it")


class Garbled(EOFError):
    """The gzip data reads to the file's end without a trailer, as a crash's cut leaves it, but what
    it decodes to is no archive text before its last line: a corruption the inflater did not refuse
    (overwritten bytes can decode as other valid deflate data). A crash's cut leaves whole records
    and, at most, the start of one more."""

    def __init__(self) -> None:
        super().__init__("no gzip trailer, and lines that are no archive records before the last one")


def could_be_cut_record(line: bytes) -> bool:
    """Whether ``line`` could be the start of an archive record that a crash cut short: the record's
    head (or part of it), then UTF-8 text (its last character may be cut) without the characters below
    U+0020 that JSON escapes. Any other character may be a payload's, archived as the device sent it
    (an ideographic space, DEL, a byte-order mark): str.isprintable() would refuse those."""
    head = b'{"t":'
    if not (line.startswith(head) or head.startswith(line)):
        return False
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":  # a character cut at the end is all a cut may leave
            return False
        text = line[: exc.start].decode("utf-8")
    return not any(c < " " for c in text)


def trailing_zeros(raw: IO[bytes]) -> int:
    """The number of zero bytes ending the file ``raw`` (left at its start)."""
    size = raw.seek(0, os.SEEK_END)
    zeros = 0
    while zeros < size:
        n = min(READ_BYTES, size - zeros)
        raw.seek(size - zeros - n)
        kept = len(raw.read(n).rstrip(b"\0"))
        zeros += n - kept
        if kept:
            break
    raw.seek(0)
    return zeros


def is_damage(exc: Exception, inflate_errors: tuple[type[Exception], ...]) -> bool:
    """Whether the reason a gzip file ended is damage (the inflater refused its data, or it decoded
    to no archive text), not a cut."""
    return isinstance(exc, (*inflate_errors, Garbled))


def damage_offset(path: Path, inflate: Any, inflate_errors: tuple[type[Exception], ...]) -> tuple[int, int] | None:
    """Where ``inflate`` refuses the gzip data of ``path`` (members read one after the other, as the
    reader does): the start of the member and the byte it fails at; None if it reads to the end.
    Run only once damage was found: it inflates the file again, up to the damage."""
    pos = 0  # file offset of ``chunk``'s first byte
    member: Any = None
    with path.open("rb") as f:
        while chunk := f.read(READ_BYTES):
            while chunk:
                if member is None:
                    member, start = inflate.decompressobj(31), pos
                before = member.copy()
                try:
                    member.decompress(chunk)
                except inflate_errors:
                    at = pos + inflated_bytewise(before, chunk, inflate, inflate_errors)[0]
                    return (start if start <= at else at), at
                if not member.eof:
                    pos, chunk = pos + len(chunk), b""
                    continue
                used = len(chunk) - len(member.unused_data)
                pos, chunk, member = pos + used, member.unused_data, None
    return None


def inflated_bytewise(member: Any, chunk: bytes, inflate: Any,
                      inflate_errors: tuple[type[Exception], ...]) -> tuple[int, bytes]:
    """``chunk`` fed to ``member`` one byte at a time (members read one after the other): the index of
    the byte at which inflating fails (the last byte's if none does), and what was inflated before it."""
    out = []
    for i in range(len(chunk)):
        if member is None:
            member = inflate.decompressobj(31)
        try:
            out.append(member.decompress(chunk[i : i + 1]))
        except inflate_errors:
            return i, b"".join(out)
        if member.eof:
            member = None
    return len(chunk) - 1, b"".join(out)
