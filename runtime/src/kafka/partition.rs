//! Which partition a key lands on: the Java client's `murmur2` partitioner,
//! which every producer of the pipeline is configured with
//! (`partitioner = murmur2_random`; `crate::kafka::client_config`).
//!
//! Services never need this while running — the producer picks the partition
//! and the detector reads it off the record. Offline tools do: moving the
//! detector's per-partition state when a topic's partition count changes
//! (`trackstream_detector::store::repartition`) must know where each waybill's
//! records will go after the change without producing one.

/// Kafka's `Utils.murmur2` (MurmurHash2, seed `0x9747b28c`), as a signed
/// 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Kafka computes `seed ^ length` in 32-bit arithmetic: a key over 4 GiB
    // wraps the same way.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `partitions` a non-empty `key` is produced to (Java's
/// `toPositive(murmur2(key)) % partitions`; librdkafka's `murmur2_random`
/// is the same for non-empty keys). `partitions` must be positive.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for i in 0..1_000 {
            let key = format!("sf:SF{i:010}");
            let p = partition_for(key.as_bytes(), 12);
            assert!((0..12).contains(&p));
            assert_eq!(p, partition_for(key.as_bytes(), 12));
        }
    }
}
