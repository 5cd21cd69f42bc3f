"""strongroom.crypto.age: round trips, random access, tampering, limits, keys."""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.crypto import age, bech32
from strongroom.crypto.age import CHUNK_SIZE, TAG_SIZE
from strongroom.crypto.stream import ENCRYPTED_CHUNK_SIZE, NONCE_SIZE, sealed_size
from strongroom.errors import (
    HeaderError,
    HmacError,
    IntegrityError,
    InvalidInput,
    NoIdentityMatched,
    PayloadError,
)

IDENTITY = age.X25519Identity.generate()
OTHER = age.X25519Identity.generate()
# The key of the public age test vectors.
VECTOR_IDENTITY = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"

EDGE_SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 7]
sizes = st.one_of(st.sampled_from(EDGE_SIZES), st.integers(0, 5 * CHUNK_SIZE))
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plain(n: int) -> bytes:
    return os.urandom(n)


def _payload_start(blob: bytes) -> int:
    header = age.parse_header(blob)
    assert header is not None
    return header.size + NONCE_SIZE


# -- round trips ------------------------------------------------------------------


@FAST
@given(size=sizes, threads=st.integers(1, 4))
def test_round_trip(size: int, threads: int) -> None:
    data = _plain(size)
    blob = age.encrypt(data, [IDENTITY.recipient], threads=threads)
    expected_chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(blob) == _payload_start(blob) + size + expected_chunks * TAG_SIZE
    assert age.decrypt(blob, [IDENTITY]) == data


@FAST
@given(size=sizes, threads=st.integers(1, 4))
def test_stream_round_trip(size: int, threads: int) -> None:
    data = _plain(size)
    enc = io.BytesIO()
    seen: list[int] = []
    n = age.encrypt_stream(
        io.BytesIO(data), enc, [IDENTITY.recipient], threads=threads, progress=seen.append
    )
    assert n == size == sum(seen)
    dec = io.BytesIO()
    progressed: list[int] = []
    assert (
        age.decrypt_stream(
            io.BytesIO(enc.getvalue()), dec, [IDENTITY], progress=progressed.append, threads=threads
        )
        == size
    )
    assert dec.getvalue() == data
    assert sum(progressed) == size
    # Both writers produce the same layout: the other side decrypts it.
    assert age.decrypt(enc.getvalue(), [IDENTITY]) == data


def test_stream_spans_many_blocks() -> None:
    """More than two 4 MiB blocks, ending exactly on a block's held-back chunk."""
    data = _plain(64 * CHUNK_SIZE * 2 + CHUNK_SIZE)
    enc = io.BytesIO()
    age.encrypt_stream(io.BytesIO(data), enc, [IDENTITY.recipient])
    assert age.decrypt(enc.getvalue(), [IDENTITY]) == data
    dec = io.BytesIO()
    age.decrypt_stream(io.BytesIO(enc.getvalue()), dec, [IDENTITY])
    assert dec.getvalue() == data


class _Trickle(io.RawIOBase):
    """A stream with short reads and no readinto fast path beyond the base class."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), 1000, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_streams_accept_short_reads() -> None:
    data = _plain(3 * CHUNK_SIZE + 5)
    enc = io.BytesIO()
    age.encrypt_stream(_Trickle(data), enc, [IDENTITY.recipient])  # type: ignore[arg-type]
    dec = io.BytesIO()
    age.decrypt_stream(_Trickle(enc.getvalue()), dec, [IDENTITY])  # type: ignore[arg-type]
    assert dec.getvalue() == data


def test_multiple_recipients_and_identities() -> None:
    data = b"weights"
    blob = age.encrypt(data, [OTHER.recipient, IDENTITY.recipient])
    assert age.decrypt(blob, [IDENTITY]) == data
    assert age.decrypt(blob, [age.X25519Identity.generate(), OTHER]) == data


def test_given_file_key_and_with_file_key() -> None:
    key = age.new_file_key()
    blob = age.encrypt(b"x" * 100_000, [IDENTITY.recipient], file_key=key)
    reader = age.AgeReader.with_file_key(blob, key)
    assert reader.read(0, reader.plaintext_size) == b"x" * 100_000
    with pytest.raises(HmacError):
        age.AgeReader.with_file_key(blob, age.new_file_key())
    with pytest.raises(InvalidInput):
        age.AgeReader.with_file_key(blob, b"short")


def test_authenticated_size_defers_the_final_chunk_but_refuses_truncation() -> None:
    key = age.new_file_key()
    plain = _plain(5 * CHUNK_SIZE + 10)
    blob = age.encrypt(plain, [IDENTITY.recipient], file_key=key)
    reader = age.AgeReader.with_file_key(blob, key, plaintext_size=len(plain))
    assert reader.read(CHUNK_SIZE, 2 * CHUNK_SIZE) == plain[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert reader.decrypt_chunk(reader.num_chunks - 1) == plain[5 * CHUNK_SIZE :]
    with pytest.raises(PayloadError, match="expected"):
        age.AgeReader.with_file_key(blob, key, plaintext_size=len(plain) + 1)
    start = _payload_start(blob)
    cut = blob[: start + 3 * ENCRYPTED_CHUNK_SIZE]  # truncated at a chunk boundary
    with pytest.raises(PayloadError):
        age.AgeReader.with_file_key(cut, key, plaintext_size=len(plain))
    lying = age.AgeReader.with_file_key(cut, key, plaintext_size=3 * CHUNK_SIZE)
    with pytest.raises(PayloadError, match="chunk 2"):
        lying.read(0, 3 * CHUNK_SIZE)  # chunk 2 was not the final chunk


# -- random access ----------------------------------------------------------------


@FAST
@given(data=st.data(), size=sizes)
def test_read_range_equals_slice(data: st.DataObject, size: int) -> None:
    plain = _plain(size)
    reader = age.AgeReader.open(age.encrypt(plain, [IDENTITY.recipient]), [IDENTITY])
    assert reader.plaintext_size == size
    assert reader.num_chunks == max(1, -(-size // CHUNK_SIZE))
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    assert reader.read(start, end) == plain[start:end]
    index = data.draw(st.integers(0, reader.num_chunks - 1))
    assert reader.decrypt_chunk(index) == plain[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]


@FAST
@given(size=sizes, threads=st.integers(1, 4))
def test_decrypt_into_threads(size: int, threads: int) -> None:
    plain = _plain(size)
    reader = age.AgeReader.open(age.encrypt(plain, [IDENTITY.recipient]), [IDENTITY])
    out = bytearray(size)
    reader.decrypt_into(out, threads=threads)
    assert out == plain


def test_decrypt_into_checks_the_buffer() -> None:
    reader = age.AgeReader.open(age.encrypt(b"abc", [IDENTITY.recipient]), [IDENTITY])
    with pytest.raises(InvalidInput, match="3"):
        reader.decrypt_into(bytearray(4))
    with pytest.raises(InvalidInput, match="read-only"):
        reader.decrypt_into(memoryview(b"abc"))
    with pytest.raises(InvalidInput):
        reader.decrypt_chunk(1)
    with pytest.raises(InvalidInput):
        reader.read(2, 1)
    with pytest.raises(InvalidInput):
        reader.read(0, 4)


def test_closed_reader_refuses_reads() -> None:
    with age.AgeReader.open(age.encrypt(b"abc" * 30_000, [IDENTITY.recipient]), [IDENTITY]) as r:
        assert r.decrypt_chunk(0) == (b"abc" * 30_000)[:CHUNK_SIZE]
    with pytest.raises(InvalidInput, match="closed"):
        r.decrypt_chunk(0)
    with pytest.raises(InvalidInput, match="closed"):
        r.decrypt_chunk(1)
    with pytest.raises(InvalidInput, match="closed"):
        r.read(0, 1)


def test_reader_over_mmap(tmp_path: Path) -> None:
    plain = _plain(5 * CHUNK_SIZE + 3)
    path = tmp_path / "f.age"
    path.write_bytes(age.encrypt(plain, [IDENTITY.recipient]))
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        reader = age.AgeReader.open(age.BufferSource(mm), [IDENTITY])
        out = bytearray(reader.plaintext_size)
        reader.decrypt_into(out, threads=2)
        assert out == plain
        assert (
            reader.read(CHUNK_SIZE - 2, 3 * CHUNK_SIZE + 2)
            == plain[CHUNK_SIZE - 2 : 3 * CHUNK_SIZE + 2]
        )
        del reader


class _CountingSource:
    """A ByteSource that records the ranges it serves, like a remote ranged reader."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return self.data[offset : offset + size]


def test_read_touches_only_covering_chunks() -> None:
    plain = _plain(10 * CHUNK_SIZE)
    source = _CountingSource(age.encrypt(plain, [IDENTITY.recipient]))
    reader = age.AgeReader.open(source, [IDENTITY])
    source.reads.clear()
    assert (
        reader.read(4 * CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 10)
        == plain[4 * CHUNK_SIZE + 1 : 5 * CHUNK_SIZE + 10]
    )
    start = _payload_start(source.data)
    assert source.reads == [(start + 4 * ENCRYPTED_CHUNK_SIZE, 2 * ENCRYPTED_CHUNK_SIZE)]


# -- tampering --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_bit_flip_is_detected(data: st.DataObject) -> None:
    size = data.draw(st.sampled_from([0, 10, CHUNK_SIZE, 2 * CHUNK_SIZE + 3]))
    blob = bytearray(age.encrypt(_plain(size), [IDENTITY.recipient]))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((IntegrityError, NoIdentityMatched)):
        age.decrypt(bytes(blob), [IDENTITY])
    with pytest.raises((IntegrityError, NoIdentityMatched)):
        age.decrypt_stream(io.BytesIO(bytes(blob)), io.BytesIO(), [IDENTITY])


@pytest.mark.parametrize(
    "size", [0, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 9]
)
def test_truncation_at_every_chunk_boundary_is_detected(size: int) -> None:
    blob = age.encrypt(_plain(size), [IDENTITY.recipient])
    start = _payload_start(blob)
    cuts = [start + k * ENCRYPTED_CHUNK_SIZE for k in range(max(1, -(-size // CHUNK_SIZE)))]
    cuts += [len(blob) - 1, len(blob) - TAG_SIZE]
    for cut in cuts:
        truncated = blob[:cut]
        with pytest.raises(PayloadError):
            age.decrypt(truncated, [IDENTITY])
        with pytest.raises(PayloadError):
            age.AgeReader.open(truncated, [IDENTITY])
        with pytest.raises(PayloadError):
            age.decrypt_stream(io.BytesIO(truncated), io.BytesIO(), [IDENTITY])
    for cut in (start - NONCE_SIZE, start - 1):
        with pytest.raises(HeaderError):
            age.decrypt(blob[:cut], [IDENTITY])


def test_trailing_data_is_detected() -> None:
    blob = age.encrypt(_plain(CHUNK_SIZE), [IDENTITY.recipient])
    for extra in (b"\x00", bytes(TAG_SIZE), bytes(ENCRYPTED_CHUNK_SIZE)):
        with pytest.raises(PayloadError):
            age.decrypt(blob + extra, [IDENTITY])
        with pytest.raises(PayloadError):
            age.decrypt_stream(io.BytesIO(blob + extra), io.BytesIO(), [IDENTITY])


def test_swapped_chunks_are_detected() -> None:
    plain = _plain(3 * CHUNK_SIZE + 100)
    blob = bytearray(age.encrypt(plain, [IDENTITY.recipient]))
    start = _payload_start(bytes(blob))
    a = slice(start, start + ENCRYPTED_CHUNK_SIZE)
    b = slice(start + ENCRYPTED_CHUNK_SIZE, start + 2 * ENCRYPTED_CHUNK_SIZE)
    blob[a], blob[b] = blob[b], blob[a]
    with pytest.raises(PayloadError, match="chunk 0"):
        age.decrypt(bytes(blob), [IDENTITY])
    out = io.BytesIO()
    with pytest.raises(PayloadError, match="chunk 0"):
        age.decrypt_stream(io.BytesIO(bytes(blob)), out, [IDENTITY])
    assert out.getvalue() == b""  # nothing unauthenticated was released
    reader = age.AgeReader.open(bytes(blob), [IDENTITY])  # the final chunk is intact
    assert reader.decrypt_chunk(2) == plain[2 * CHUNK_SIZE : 3 * CHUNK_SIZE]
    with pytest.raises(PayloadError, match="chunk 1 failed authentication"):
        reader.decrypt_chunk(1)


def test_stream_releases_only_chunks_before_the_bad_one() -> None:
    plain = _plain(200 * CHUNK_SIZE)
    blob = bytearray(age.encrypt(plain, [IDENTITY.recipient]))
    bad = 150
    blob[_payload_start(bytes(blob)) + bad * ENCRYPTED_CHUNK_SIZE + 5] ^= 1
    out = io.BytesIO()
    with pytest.raises(PayloadError, match=f"chunk {bad} failed authentication"):
        age.decrypt_stream(io.BytesIO(bytes(blob)), out, [IDENTITY])
    assert out.getvalue() == plain[: bad * CHUNK_SIZE]


def test_wrong_key_is_no_match() -> None:
    blob = age.encrypt(b"secret", [IDENTITY.recipient])
    with pytest.raises(NoIdentityMatched):
        age.decrypt(blob, [OTHER])
    with pytest.raises(NoIdentityMatched):
        age.decrypt_stream(io.BytesIO(blob), io.BytesIO(), [OTHER])
    with pytest.raises(InvalidInput):
        age.decrypt(blob, [])


# -- header format and limits -----------------------------------------------------


class _FixedRecipient:
    def __init__(self, *stanzas: age.Stanza) -> None:
        self.stanzas = list(stanzas)

    def wrap(self, file_key: bytes) -> list[age.Stanza]:
        return self.stanzas


@pytest.mark.parametrize("body_len", [0, 1, 47, 48, 49, 96, 100])
def test_stanza_bodies_round_trip(body_len: int) -> None:
    stanza = age.Stanza("test-type", ("a", "b!~"), os.urandom(body_len))
    key = age.new_file_key()
    header_bytes = age.build_header(key, [_FixedRecipient(stanza), IDENTITY.recipient])
    lines = header_bytes.split(b"\n")
    assert all(len(line) <= 64 for line in lines[2:-3])
    header = age.parse_header(header_bytes)
    assert header is not None
    assert header.size == len(header_bytes)
    assert header.stanzas[0] == stanza
    reader_blob = header_bytes + os.urandom(16)
    with pytest.raises(PayloadError):  # header fine, MAC fine, payload missing
        age.AgeReader.with_file_key(reader_blob, key)


def test_parse_header_incomplete_and_truncated() -> None:
    header_bytes = age.build_header(age.new_file_key(), [IDENTITY.recipient])
    for cut in (0, 5, 30, len(header_bytes) - 1):
        assert age.parse_header(header_bytes[:cut], complete=False) is None
        with pytest.raises(HeaderError):
            age.parse_header(header_bytes[:cut])
    with pytest.raises(HeaderError, match="not an age file"):
        age.parse_header(b"PK\x03\x04", complete=False)


def test_invalid_stanzas_are_refused_when_writing() -> None:
    for stanza in (
        age.Stanza("", (), b""),
        age.Stanza("t", ("a b",), b""),
        age.Stanza("é", (), b""),
    ):
        with pytest.raises(InvalidInput):
            age.build_header(age.new_file_key(), [_FixedRecipient(stanza)])
    with pytest.raises(InvalidInput):
        age.build_header(age.new_file_key(), [])
    with pytest.raises(InvalidInput):
        age.build_header(b"short", [IDENTITY.recipient])


def test_header_limits() -> None:
    many = _FixedRecipient(*[age.Stanza("x", (), b"")] * (age.MAX_STANZAS + 1))
    with pytest.raises(InvalidInput, match="too many stanzas"):
        age.build_header(age.new_file_key(), [many])
    text = (
        b"age-encryption.org/v1\n"
        + b"-> x\n\n" * (age.MAX_STANZAS + 1)
        + b"--- "
        + b"A" * 43
        + b"\n"
    )
    with pytest.raises(HeaderError, match="too many stanzas"):
        age.parse_header(text)
    long_line = b"age-encryption.org/v1\n-> " + b"a" * (age.MAX_LINE_SIZE + 10)
    with pytest.raises(HeaderError, match="longer than"):
        age.parse_header(long_line, complete=False)
    big = b"age-encryption.org/v1\n" + (b"-> " + b"a" * 8000 + b"\n\n") * 200
    with pytest.raises(HeaderError, match="larger than"):
        age.parse_header(big, complete=False)


def test_header_error_messages_leave_out_secrets() -> None:
    blob = bytearray(age.encrypt(b"plaintext-marker", [IDENTITY.recipient]))
    blob[-1] ^= 1
    with pytest.raises(PayloadError) as info:
        age.decrypt(bytes(blob), [IDENTITY])
    text = str(info.value)
    assert "chunk 0" in text
    assert "plaintext-marker" not in text
    assert str(IDENTITY) not in text


# -- keys -------------------------------------------------------------------------


def test_identity_and_recipient_strings_round_trip() -> None:
    ident = age.X25519Identity.parse(VECTOR_IDENTITY)
    assert str(ident) == VECTOR_IDENTITY
    recipient = str(ident.recipient)
    assert recipient.startswith("age1") and len(recipient) == 62
    assert age.X25519Recipient.parse(recipient) == ident.recipient
    assert str(age.parse_recipient(recipient)) == recipient
    generated = age.X25519Identity.generate()
    assert str(age.X25519Identity.parse(str(generated))) == str(generated)
    assert str(generated) not in repr(generated)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "age1",
        "age1qqqq",
        "AGE1" + VECTOR_IDENTITY[16:],
        "age2qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs5p5w8s",
        "ssh-ed25519 AAAA",
    ],
)
def test_bad_recipients_raise_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        age.parse_recipient(bad)


def test_bad_identity_never_echoed() -> None:
    wrong_checksum = VECTOR_IDENTITY[:-1] + ("Q" if VECTOR_IDENTITY[-1] != "Q" else "P")
    for bad in (wrong_checksum, VECTOR_IDENTITY.lower(), VECTOR_IDENTITY[:-4]):
        with pytest.raises(InvalidInput) as info:
            age.X25519Identity.parse(bad)
        assert bad not in str(info.value)
        assert VECTOR_IDENTITY[20:40] not in str(info.value)


def test_parse_identities_skips_comments_and_blank_lines() -> None:
    text = f"# created: now\n# public key: age1...\n\n  {VECTOR_IDENTITY}  \n{IDENTITY}\n"
    identities = age.parse_identities(text)
    assert [str(i) for i in identities] == [VECTOR_IDENTITY, str(IDENTITY)]
    with pytest.raises(InvalidInput, match="line 2"):
        age.parse_identities(f"{VECTOR_IDENTITY}\nnot-a-key\n")
    with pytest.raises(InvalidInput, match="no identities"):
        age.parse_identities("# only a comment\n")


def test_bech32_bip173_vectors() -> None:
    for valid in ("A12UEL5L", "a12uel5l", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw"):
        hrp, data = bech32.decode(valid)
        assert bech32.encode(hrp, data) == valid.lower()
    for invalid in ("A1G7SGD8", "10a06t8", "1qzzfhee", "a12UEL5L", "abc1rzg", "x1b4n0q5v"):
        with pytest.raises(ValueError):
            bech32.decode(invalid)


def test_file_to_file_streams_and_failed_decrypt_leaves_no_tail(tmp_path: Path) -> None:
    """Regular files take the preallocating path; nothing beyond what was written stays."""
    plain = _plain(70 * CHUNK_SIZE + 5)
    (tmp_path / "p").write_bytes(plain)
    with (tmp_path / "p").open("rb") as src, (tmp_path / "c").open("wb") as dst:
        assert age.encrypt_stream(src, dst, [IDENTITY.recipient]) == len(plain)
    blob = (tmp_path / "c").read_bytes()
    assert len(blob) == _payload_start(blob) + len(plain) + 71 * TAG_SIZE
    with (tmp_path / "c").open("rb") as src, (tmp_path / "d").open("wb") as dst:
        assert age.decrypt_stream(src, dst, [IDENTITY]) == len(plain)
    assert (tmp_path / "d").read_bytes() == plain
    bad = bytearray(blob)
    bad[_payload_start(blob) + 66 * ENCRYPTED_CHUNK_SIZE + 1] ^= 1
    (tmp_path / "bad").write_bytes(bytes(bad))
    with (
        (tmp_path / "bad").open("rb") as src,
        (tmp_path / "e").open("wb") as dst,
        pytest.raises(PayloadError, match="chunk 66"),
    ):
        age.decrypt_stream(src, dst, [IDENTITY])
    assert (tmp_path / "e").read_bytes() == plain[: 66 * CHUNK_SIZE]


# -- regular files: each worker reads and seals/opens its own 1 MiB block --------------

FILE_BLOCK = 16 * CHUNK_SIZE  # age._FILE_BLOCK_CHUNKS chunks


def _encrypt_file(tmp_path: Path, plain: bytes, threads: int = 2) -> bytes:
    (tmp_path / "plain").write_bytes(plain)
    with (tmp_path / "plain").open("rb") as src, (tmp_path / "sealed").open("wb") as dst:
        assert age.encrypt_stream(src, dst, [IDENTITY.recipient], threads=threads) == len(plain)
    return (tmp_path / "sealed").read_bytes()


def _decrypt_file(tmp_path: Path, blob: bytes, out: io.BytesIO, threads: int = 2) -> int:
    (tmp_path / "in.age").write_bytes(blob)
    with (tmp_path / "in.age").open("rb") as src:
        return age.decrypt_stream(src, out, [IDENTITY], threads=threads)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "size", [1, CHUNK_SIZE, FILE_BLOCK - 1, FILE_BLOCK, FILE_BLOCK + 1, 5 * FILE_BLOCK + 3]
)
def test_file_paths_match_the_streams(tmp_path: Path, size: int, threads: int) -> None:
    """A regular file is read in blocks by the workers; the result is the stream's format."""
    plain = _plain(size)
    seen: list[int] = []
    (tmp_path / "plain").write_bytes(plain)
    with (tmp_path / "plain").open("rb") as src, (tmp_path / "sealed").open("wb") as dst:
        age.encrypt_stream(src, dst, [IDENTITY.recipient], threads=threads, progress=seen.append)
    assert sum(seen) == size
    blob = (tmp_path / "sealed").read_bytes()
    assert len(blob) == _payload_start(blob) + sealed_size(size)
    assert age.decrypt(blob, [IDENTITY]) == plain  # the in-memory reader agrees
    out, progressed = io.BytesIO(), []
    (tmp_path / "in.age").write_bytes(blob)
    with (tmp_path / "in.age").open("rb") as src:
        assert (
            age.decrypt_stream(src, out, [IDENTITY], threads=threads, progress=progressed.append)
            == size
        )
    assert out.getvalue() == plain
    assert sum(progressed) == size
    # From a position other than the file's start (stdin redirected after a prefix).
    (tmp_path / "prefixed").write_bytes(b"xyz" + blob)
    with (tmp_path / "prefixed").open("rb") as src:
        src.read(3)
        again = io.BytesIO()
        age.decrypt_stream(src, again, [IDENTITY], threads=threads)
    assert again.getvalue() == plain


def test_file_path_refuses_truncation_and_trailing_data(tmp_path: Path) -> None:
    plain = _plain(2 * FILE_BLOCK + 3 * CHUNK_SIZE + 9)
    blob = _encrypt_file(tmp_path, plain)
    start = _payload_start(blob)
    chunks = -(-len(plain) // CHUNK_SIZE)
    for cut in [start + k * ENCRYPTED_CHUNK_SIZE for k in (0, 1, 16, 32, chunks - 1)] + [
        len(blob) - 1,
        len(blob) - TAG_SIZE,
    ]:
        out = io.BytesIO()
        with pytest.raises(PayloadError):
            _decrypt_file(tmp_path, blob[:cut], out)
        # Only whole authenticated chunks before the cut were released.
        assert plain.startswith(out.getvalue())
        assert len(out.getvalue()) % CHUNK_SIZE == 0
    for extra in (b"\x00", bytes(TAG_SIZE), bytes(ENCRYPTED_CHUNK_SIZE)):
        with pytest.raises(PayloadError):
            _decrypt_file(tmp_path, blob + extra, io.BytesIO())


@pytest.mark.parametrize("bad", [0, 15, 16, 37])
def test_file_path_releases_only_chunks_before_the_bad_one(tmp_path: Path, bad: int) -> None:
    plain = _plain(40 * CHUNK_SIZE)
    blob = bytearray(_encrypt_file(tmp_path, plain))
    blob[_payload_start(bytes(blob)) + bad * ENCRYPTED_CHUNK_SIZE + 5] ^= 1
    out = io.BytesIO()
    with pytest.raises(PayloadError, match=f"chunk {bad} failed authentication"):
        _decrypt_file(tmp_path, bytes(blob), out)
    assert out.getvalue() == plain[: bad * CHUNK_SIZE]


def test_file_path_releases_a_misflagged_final_chunk_then_fails(tmp_path: Path) -> None:
    """A file cut after a full non-final chunk: that chunk is authentic, released, then refused."""
    plain = _plain(20 * CHUNK_SIZE + 1)
    blob = _encrypt_file(tmp_path, plain)
    cut = _payload_start(blob) + 17 * ENCRYPTED_CHUNK_SIZE
    out = io.BytesIO()
    with pytest.raises(PayloadError, match="chunk 16 is authentic but out of place"):
        _decrypt_file(tmp_path, blob[:cut], out)
    assert out.getvalue() == plain[: 17 * CHUNK_SIZE]


def _meddler(path: Path, change: str, keep: int) -> Callable[[int], None]:
    """A progress callback that truncates ``path`` to ``keep`` bytes or appends to it."""

    def meddle(_: int) -> None:
        with path.open("r+b") as f:
            if change == "shrink":
                f.truncate(keep)
            else:
                f.seek(0, os.SEEK_END)
                f.write(b"more")

    return meddle


@pytest.mark.parametrize(("change", "word"), [("shrink", "shrank"), ("grow", "grew")])
def test_input_file_that_changes_size_is_refused(tmp_path: Path, change: str, word: str) -> None:
    """The size is read once: a file that shrinks or grows while read is refused, not mixed."""
    plain = _plain(3 * FILE_BLOCK)
    path = tmp_path / "plain"
    path.write_bytes(plain)
    with (
        path.open("rb") as src,
        pytest.raises(InvalidInput, match=f"the input file {word} while it was read"),
    ):
        meddle = _meddler(path, change, FILE_BLOCK)
        age.encrypt_stream(src, io.BytesIO(), [IDENTITY.recipient], threads=1, progress=meddle)
    blob = age.encrypt(plain, [IDENTITY.recipient])
    sealed = tmp_path / "sealed"
    sealed.write_bytes(blob)
    with (
        sealed.open("rb") as src,
        pytest.raises(PayloadError, match=f"the file {word} while it was read"),
    ):
        meddle = _meddler(sealed, change, len(blob) // 2)
        age.decrypt_stream(src, io.BytesIO(), [IDENTITY], threads=1, progress=meddle)


def test_hybrid_prefixes_match_age_pq() -> None:
    """age parses X25519 keys without loading age_pq; its copy of the prefixes must agree."""
    from strongroom.crypto import age_pq

    assert age._PQ_RECIPIENT_PREFIX == age_pq.RECIPIENT_PREFIX
    assert age._PQ_IDENTITY_PREFIX == age_pq.IDENTITY_PREFIX
    hybrid = age_pq.HybridIdentity.generate()
    assert isinstance(age.parse_recipient(str(hybrid.recipient)), age_pq.HybridRecipient)
    assert isinstance(age.parse_identity(str(hybrid)), age_pq.HybridIdentity)
