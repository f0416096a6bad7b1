"""Log masking: every occurrence of a secret becomes `***` before the log leaves the dispatcher,
however the stream is cut into chunks, with bounded memory and offsets of the masked stream."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Sequence

import pytest

from shared.masking import StreamMasker, mask_bytes, mask_json, mask_text, masking_forms


def stream(masker: StreamMasker, chunks: Iterable[bytes]) -> bytes:
    out = [masker.feed(chunk) for chunk in chunks]
    return b"".join(out) + masker.flush()


def reference_mask(data: bytes, forms: Sequence[bytes]) -> bytes:
    """Spec by brute force: try every form at every position; each run of overlapping occurrences
    (adjacent ones are separate runs) becomes one `***`."""
    spans = sorted((i, i + len(form)) for i in range(len(data)) for form in forms if data.startswith(form, i))
    out, covered = b"", 0
    for start, stop in spans:
        if start < covered:
            covered = max(covered, stop)
        else:
            out += data[covered:start] + b"***"
            covered = stop
    return out + data[covered:]


def test_a_secret_in_one_chunk_is_masked() -> None:
    assert mask_bytes(b"connecting with password hunter22 to db\n", ["hunter22"]) == (
        b"connecting with password *** to db\n"
    )


def test_every_occurrence_is_masked() -> None:
    assert mask_bytes(b"hunter22 and hunter22, hunter22", ["hunter22"]) == b"*** and ***, ***"


def test_a_secret_split_at_every_possible_point_between_two_chunks_is_masked() -> None:
    secret = b"hunter22-long-secret"
    text = b"before " + secret + b" middle " + secret + b" after"
    expected = b"before *** middle *** after"
    for split in range(len(text) + 1):
        masker = StreamMasker([secret])
        assert stream(masker, [text[:split], text[split:]]) == expected, f"split at {split}"


def test_a_secret_cut_into_three_chunks_at_every_pair_of_points_is_masked() -> None:
    text = b"x=s3cr3t!y"
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            masker = StreamMasker(["s3cr3t!"])
            chunks = [text[:first], text[first:second], text[second:]]
            assert stream(masker, chunks) == b"x=***y", chunks


def test_output_does_not_depend_on_how_the_stream_is_chunked() -> None:
    rng = random.Random(7)
    secrets = [b"abcab", b"bcabca", b"zzzz", b"cabcabc", b"abca"]
    for _ in range(200):
        data = bytes(rng.choice(b"abcz\n") for _ in range(rng.randint(0, 300)))
        expected = reference_mask(data, secrets)
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 12))))
        bounds = [0, *cuts, len(data)]
        chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
        assert stream(StreamMasker(secrets), chunks) == expected, (data, cuts)


def test_many_one_byte_chunks_mask_like_one_chunk() -> None:
    text = b"user=admin pass=correct-horse token=tok-123456 pass=correct-horse\n" * 3
    secrets = ["correct-horse", "tok-123456"]
    masker = StreamMasker(secrets)
    assert stream(masker, [bytes([b]) for b in text]) == mask_bytes(text, secrets)
    assert b"correct-horse" not in mask_bytes(text, secrets)
    assert b"tok-123456" not in mask_bytes(text, secrets)


def test_a_secret_containing_another_is_masked_whole() -> None:
    assert mask_bytes(b"pw=password123 p=pass1", ["pass", "password123"]) == b"pw=*** p=***1"


def test_overlapping_occurrences_of_different_secrets_are_masked_as_one_run() -> None:
    assert mask_bytes(b"[abcdefgh]", ["abcdef", "cdefgh"]) == b"[***]"


def test_overlapping_occurrences_of_one_secret_are_masked_as_one_run() -> None:
    assert mask_bytes(b"<aaaaaaa>", ["aaaa"]) == b"<***>"
    assert mask_bytes(b"<abababab>", ["abab"]) == b"<***>"


def test_adjacent_occurrences_are_masked_separately() -> None:
    assert mask_bytes(b"secretsecret", ["secret"]) == b"******"


def test_held_back_bytes_never_exceed_the_longest_secret_minus_one() -> None:
    secrets = ["aaaa", "a-much-longer-secret"]
    masker = StreamMasker(secrets)
    longest = max(len(s) for s in secrets)
    rng = random.Random(3)
    out = []
    for _ in range(2000):
        chunk = b"a" * rng.randint(0, 50) + rng.choice([b"", b"a-much-longer-secret"[: rng.randint(0, 20)]])
        out.append(masker.feed(chunk))
        assert masker.held_back <= longest - 1
    out.append(masker.flush())
    assert masker.held_back == 0
    masked = b"".join(out)
    assert b"aaaa" not in masked and b"a-much-longer-secret" not in masked


def test_an_endless_run_of_overlapping_occurrences_is_released_as_one_mask_as_it_goes() -> None:
    masker = StreamMasker(["aaaa"])
    assert masker.feed(b"start " + b"a" * 1000) == b"start ***"
    assert masker.feed(b"a" * 1000) == b""
    assert masker.feed(b"aa end") + masker.flush() == b" end"


def test_a_ten_kilobyte_secret_is_masked_across_many_chunks() -> None:
    secret = "".join(random.Random(5).choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10_240))
    text = ("log line\n" + secret + "\nmore\n" + secret).encode()
    for size in (1, 7, 1000, 4096, 10_239, 10_240, 10_241, 65536):
        masker = StreamMasker([secret])
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert stream(masker, chunks) == b"log line\n***\nmore\n***", size
        assert masker.held_back == 0


def test_offsets_count_the_masked_stream_that_readers_see() -> None:
    masker = StreamMasker(["hunter22"])
    published: list[tuple[int, bytes]] = []
    for chunk in [b"pw=hun", b"ter22\n", b"done\n"]:
        offset = masker.bytes_out
        published.append((offset, masker.feed(chunk)))
    published.append((masker.bytes_out, masker.flush()))
    log = b"".join(data for _, data in published)
    assert log == b"pw=***\ndone\n"
    for offset, data in published:
        assert log[offset : offset + len(data)] == data
    assert masker.bytes_in == 17
    assert masker.bytes_out == len(log) == 12


def test_without_secrets_chunks_pass_through_at_once() -> None:
    masker = StreamMasker([])
    assert masker.feed(b"partial li") == b"partial li"
    assert masker.held_back == 0
    assert masker.flush() == b""


def test_secrets_shorter_than_four_bytes_are_not_masked_and_the_empty_string_never() -> None:
    assert masking_forms(["", "abc", "abcd"]) == (b"abcd",)
    assert mask_bytes(b"abc abcd", ["abc", "", "abcd"]) == b"abc ***"
    assert masking_forms(["", "ab"], min_length=0) == (b"ab",)
    assert mask_bytes(b"ab ab", ["ab"], min_length=2) == b"*** ***"


def test_a_secret_with_surrounding_whitespace_is_masked_also_without_it() -> None:
    assert mask_bytes(b"pw=hunter22 and 'hunter22\n'", ["hunter22\n"]) == b"pw=*** and '***'"


def test_a_secret_is_masked_also_as_it_appears_escaped_in_json() -> None:
    secret = 'pa"ss\\word'
    printed = json.dumps({"password": secret}).encode()
    assert secret.encode() not in printed
    assert mask_bytes(printed, [secret]) == b'{"password": "***"}'


def test_unicode_secrets_are_masked_in_text_and_json_trees() -> None:
    secret = "pässwörd-秘密"
    assert mask_text(f"login {secret}!", [secret]) == "login ***!"
    payload = {"env": {"DB_URL": f"postgres://u:{secret}@db/x"}, "args": [secret, 3, None], secret: True}
    assert mask_json(payload, [secret]) == {
        "env": {"DB_URL": "postgres://u:***@db/x"},
        "args": ["***", 3, None],
        "***": True,
    }


def test_mask_json_without_secrets_returns_the_tree_unchanged() -> None:
    payload = {"a": ["b"]}
    assert mask_json(payload, []) is payload


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 1 << 16])
def test_random_binary_logs_with_secrets_match_the_brute_force_spec(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    secrets = [b"\x00\x01\x02\x03", b"\x01\x02\x03\x00\x01", bytes(range(200, 230))]
    pieces = [rng.randbytes(rng.randint(0, 40)) for _ in range(200)]
    data = b"".join(piece + rng.choice([*secrets, b""]) for piece in pieces)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert stream(StreamMasker(secrets), chunks) == reference_mask(data, secrets)


def test_output_that_cannot_grow_into_a_secret_is_released_at_once() -> None:
    masker = StreamMasker(["hunter2secret"])
    assert masker.feed(b"progress 10%\n") == b"progress 10%\n"
    assert masker.held_back == 0
    assert masker.feed(b"password is hunt") == b"password is "
    assert masker.held_back == 4
    assert masker.feed(b"er2secret!\n") == b"***!\n"
