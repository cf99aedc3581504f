"""Record batch header validation and offset assignment (records stay opaque)."""

import struct

import crc32c
import pytest

from chronik_trio.kafka.errors import CorruptRecords, InvalidRecords, RecordsTooLarge
from chronik_trio.kafka.records import keyless_records, parse_batches, with_offsets
from tests.kafka_wire import Record, build_batch, corrupt_crc, parse_batches as decode_batches

LIMIT = 1 << 20


def _batch(n=3, **kw):
    return build_batch([Record(b"k%d" % i, b"v%d" % i) for i in range(n)], **kw)


def test_several_batches_in_one_blob_are_each_validated():
    blob = _batch(2, base_timestamp_ms=1000) + _batch(5, base_timestamp_ms=2000, producer_id=7)
    headers = parse_batches(blob, batch_bytes_max=LIMIT)
    assert [h.record_count for h in headers] == [2, 5]
    assert [h.last_offset_delta for h in headers] == [1, 4]
    assert headers[1].producer_id == 7 and headers[1].start == len(_batch(2))
    assert headers[1].max_timestamp_ms == 2000


def test_a_crc_mismatch_is_corrupt():
    with pytest.raises(CorruptRecords, match="CRC"):
        parse_batches(corrupt_crc(_batch()), batch_bytes_max=LIMIT)


def test_a_flipped_record_byte_is_corrupt():
    b = bytearray(_batch())
    b[-1] ^= 1
    with pytest.raises(CorruptRecords, match="CRC"):
        parse_batches(bytes(b), batch_bytes_max=LIMIT)


@pytest.mark.parametrize("cut", [1, 30, 61])
def test_a_truncated_batch_is_corrupt(cut):
    with pytest.raises(CorruptRecords):
        parse_batches(_batch()[:-cut], batch_bytes_max=LIMIT)


def test_trailing_garbage_after_a_batch_is_corrupt():
    with pytest.raises(CorruptRecords):
        parse_batches(_batch() + b"\x00" * 10, batch_bytes_max=LIMIT)


def test_empty_records_are_corrupt():
    with pytest.raises(CorruptRecords):
        parse_batches(b"", batch_bytes_max=LIMIT)


def test_magic_other_than_2_is_invalid():
    b = bytearray(_batch())
    b[16] = 1
    with pytest.raises(InvalidRecords, match="magic 1"):
        parse_batches(bytes(b), batch_bytes_max=LIMIT)


def test_record_count_must_match_last_offset_delta():
    b = bytearray(_batch(3))
    struct.pack_into(">i", b, 57, 4)
    struct.pack_into(">I", b, 17, crc32c.crc32c(bytes(b[21:])))
    with pytest.raises(InvalidRecords, match="4 records"):
        parse_batches(bytes(b), batch_bytes_max=LIMIT)


def test_a_batch_over_the_limit_is_too_large():
    batch = _batch(10)
    with pytest.raises(RecordsTooLarge, match=str(len(batch))):
        parse_batches(batch, batch_bytes_max=len(batch) - 1)
    assert parse_batches(batch, batch_bytes_max=len(batch))


def test_assigning_offsets_keeps_the_crc_and_the_records():
    blob = _batch(2) + _batch(3)
    headers = parse_batches(blob, batch_bytes_max=LIMIT)
    out = with_offsets(blob, headers[1], base_offset=1000, leader_epoch=7)
    assert parse_batches(out, batch_bytes_max=LIMIT)  # CRC still valid
    (decoded,) = decode_batches(out)
    assert decoded.base_offset == 1000
    assert struct.unpack_from(">i", out, 12)[0] == 7
    assert [r.value for r in decoded.records] == [b"v0", b"v1", b"v2"]


def test_first_offset_at_or_after_a_timestamp_reads_inside_the_batch():
    from chronik_trio.kafka.records import first_offset_at_or_after
    batch = build_batch([Record(None, b"%d" % i, timestamp_delta=10 * i) for i in range(5)],
                        base_offset=100, base_timestamp_ms=1000)
    assert first_offset_at_or_after(batch, 999) == (100, 1000)
    assert first_offset_at_or_after(batch, 1020) == (102, 1020)
    assert first_offset_at_or_after(batch, 1021) == (103, 1030)
    assert first_offset_at_or_after(batch, 1041) is None


def test_first_offset_at_or_after_reads_gzip_batches_and_declines_other_codecs():
    import gzip
    from chronik_trio.kafka.records import first_offset_at_or_after
    plain = build_batch([Record(None, b"x", timestamp_delta=d) for d in (0, 5, 9)],
                        base_offset=7, base_timestamp_ms=50)
    body = gzip.compress(plain[61:])
    header = bytearray(plain[:61])
    struct.pack_into(">h", header, 21, 1)  # attributes: gzip
    gz = bytes(header) + body
    assert first_offset_at_or_after(gz, 54) == (8, 55)
    struct.pack_into(">h", header, 21, 2)  # snappy: not decoded here
    assert first_offset_at_or_after(bytes(header) + body, 54) is None


def test_keyless_records_names_them_and_refuses_offset_deltas_that_do_not_rise():
    blob = build_batch([Record(b"k", b"1"), Record(None, b"2"), Record(b"k", b"3")])
    assert keyless_records(blob, parse_batches(blob, batch_bytes_max=LIMIT)) == [1]
    repeated = bytearray(build_batch([Record(b"k", b"1"), Record(b"k", b"2")]))
    second = 61 + 1 + repeated[61] // 2  # the second record's length varint
    assert repeated[second + 3] == 2  # its offset delta, zigzag(1)
    repeated[second + 3] = 0
    struct.pack_into(">I", repeated, 17, crc32c.crc32c(bytes(repeated[21:])))
    with pytest.raises(CorruptRecords, match="do not parse"):
        keyless_records(bytes(repeated), parse_batches(bytes(repeated), batch_bytes_max=LIMIT))
