from operators.partitioning import murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafkas_java_implementation() -> None:
    for key, expected in JAVA_VECTORS.items():
        assert murmur2(key) == expected & 0xFFFFFFFF


def test_partition_for_is_positive_modulo() -> None:
    assert partition_for("foobar", 7) == (murmur2(b"foobar") & 0x7FFFFFFF) % 7
    assert {partition_for(f"req-{i}", 4) for i in range(200)} == {0, 1, 2, 3}
    assert partition_for("日本語", 5) == partition_for("日本語".encode(), 5)
