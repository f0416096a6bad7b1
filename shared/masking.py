"""Masking of secret cleartexts in log output, before a single byte leaves the dispatcher.

`StreamMasker` takes a log as chunks in whatever sizes the pipe delivers and returns masked chunks:
- an occurrence split across chunks is still masked: the masker holds back the last
  `longest form - 1` bytes of what it has seen, never more (bounded memory whatever the stream);
- the union of all occurrences of all secrets is masked, overlapping ones included, and each run of
  overlapping occurrences becomes one `***` (so `abcdef` and `cdefgh` mask `abcdefgh` as `***`,
  which longest-first replacement would leave as `***gh`); adjacent occurrences give `******`;
- the output is the same however the input is chunked, so offsets are deterministic;
- `bytes_out` counts the masked stream, whose offsets are the ones readers and archives see.
Each secret is masked as its UTF-8 bytes, its whitespace-stripped form (a value encrypted with
`echo` keeps a newline the program never prints) and its JSON-escaped form (a program that prints
its payload as JSON escapes quotes and backslashes). Forms shorter than `min_length` bytes (4 by
default) are not masked: replacing every `ab` in a log would make it unreadable while hiding little.
The empty string is never masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

MASK_BYTES = b"***"
MIN_SECRET_BYTES = 4


def masking_forms(secrets: Iterable[str | bytes], min_length: int = MIN_SECRET_BYTES) -> tuple[bytes, ...]:
    """The byte strings to mask for these secrets, longest first, without duplicates or short forms."""
    forms: set[bytes] = set()
    for secret in secrets:
        if isinstance(secret, bytes):
            forms.update((secret, secret.strip()))
            continue
        forms.update(
            form.encode("utf-8")
            for form in (secret, secret.strip(), json.dumps(secret, ensure_ascii=False)[1:-1])
        )
    return tuple(sorted((form for form in forms if len(form) >= max(1, min_length)), key=lambda f: -len(f)))


class StreamMasker:
    """Masks one byte stream (use one per file descriptor, so held-back bytes keep their stream)."""

    def __init__(
        self,
        secrets: Iterable[str | bytes],
        *,
        min_length: int = MIN_SECRET_BYTES,
        replacement: bytes = MASK_BYTES,
    ) -> None:
        self.forms = masking_forms(secrets, min_length)
        self.replacement = replacement
        self._keep = max((len(form) for form in self.forms), default=1) - 1
        self._held = b""
        self._masked_until = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def held_back(self) -> int:
        """Bytes received but not yet returned: at most the longest form's length minus one."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """The masked bytes that can be released now; a possible secret prefix at the end waits."""
        self.bytes_in += len(chunk)
        return self._release(self._held + chunk if self._held else chunk, final=False)

    def flush(self) -> bytes:
        """The rest at end of stream (what was held back, masked)."""
        return self._release(self._held, final=True)

    def _release(self, buf: bytes, final: bool) -> bytes:
        out = self._mask(buf, final)
        self.bytes_out += len(out)
        return out

    def _unfinished_tail(self, buf: bytes) -> int:
        """How many bytes at the end of `buf` could still grow into a secret, and so must wait.

        Holding back only those (not always the longest form's length) lets a line that ends in ordinary
        output reach the live log at once instead of waiting for the process to print more.
        """
        size = len(buf)
        start = max(0, size - self._keep)
        longest = 0
        for form in self.forms:
            at = buf.find(form[:1], start)
            while at != -1 and size - at > longest:
                if form.startswith(buf[at:]):
                    longest = size - at
                    break
                at = buf.find(form[:1], at + 1)
        return longest

    def _mask(self, buf: bytes, final: bool) -> bytes:
        """Mask occurrences starting before `safe`; keep `buf[safe:]` for the next call.

        Every occurrence starting before `safe` lies wholly inside `buf`, and every later one starts in
        the held tail, so each occurrence is found exactly once. A run of overlapping occurrences that
        crosses `safe` is remembered as `_masked_until` (in the held tail's coordinates): occurrences
        that overlap it extend the run without a second `***`. Overlapping occurrences of one form are
        joined as they are found (jumping to the last one that overlaps), so a log that repeats a
        self-overlapping secret costs one span per run, not one per byte.
        """
        size = len(buf)
        safe = size if final else size - self._unfinished_tail(buf)
        spans: list[tuple[int, int]] = []
        for form in self.forms:
            length = len(form)
            end = min(size, safe + length - 1)
            found = buf.find(form, 0, end)
            while found != -1:
                last = found
                overlapping = buf.rfind(form, last + 1, min(end, last + 2 * length - 1))
                while overlapping != -1:
                    last = overlapping
                    overlapping = buf.rfind(form, last + 1, min(end, last + 2 * length - 1))
                spans.append((found, last + length))
                found = buf.find(form, last + length, end)
        covered = self._masked_until
        if not spans:
            released = buf[covered:safe]
        else:
            spans.sort()
            parts: list[bytes] = []
            for start, stop in spans:
                if start < covered:
                    covered = max(covered, stop)
                    continue
                parts += (buf[covered:start], self.replacement)
                covered = stop
            parts.append(buf[covered:safe])
            released = b"".join(parts)
        self._masked_until = max(0, covered - safe)
        self._held = buf[safe:]
        return released


def mask_bytes(data: bytes, secrets: Iterable[str | bytes], min_length: int = MIN_SECRET_BYTES) -> bytes:
    masker = StreamMasker(secrets, min_length=min_length)
    return masker.feed(data) + masker.flush()


def mask_text(text: str, secrets: Iterable[str | bytes], min_length: int = MIN_SECRET_BYTES) -> str:
    """Masking over UTF-8 is safe for text: a secret's encoding only ever matches whole characters."""
    return mask_bytes(text.encode("utf-8"), secrets, min_length).decode("utf-8", errors="replace")


def mask_json(value: object, secrets: Iterable[str | bytes], min_length: int = MIN_SECRET_BYTES) -> object:
    """A copy of a JSON tree (a rendered payload) with secrets masked inside every string and key,
    for previews and for what is recorded of a rendered run."""
    forms = masking_forms(secrets, min_length)
    if not forms:
        return value

    def walk(item: object) -> object:
        if isinstance(item, str):
            return mask_text(item, forms, min_length)
        if isinstance(item, Mapping):
            return {walk(key): walk(child) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [walk(child) for child in item]
        return item

    return walk(value)
