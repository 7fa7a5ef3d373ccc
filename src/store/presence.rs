//! Presence maps: which byte ranges of a data file have actually been written.
//! A reader may only be served bytes the map claims, so the map keeps its ranges sorted,
//! disjoint, non-adjacent and inside the data file, with a bounded number of ranges, and
//! serializes to a small checked byte format for the metadata commit record.

use std::fmt;

/// Bytes of the encoded range count that precedes the ranges.
pub const ENCODED_COUNT_LEN: usize = 4;
/// Bytes of one encoded range: start u64 LE, end u64 LE.
pub const ENCODED_RANGE_LEN: usize = 16;
/// The most ranges the encoded form can describe (the count is a u32).
pub const MAX_ENCODABLE_RANGES: usize = u32::MAX as usize;

/// Which bytes of a data file of `len` bytes are present: sorted, disjoint, non-adjacent
/// half-open ranges, never more than `max_ranges` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMap {
    len: u64,
    max_ranges: usize,
    ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceError {
    /// The range is reversed or reaches past the end of the data file.
    OutOfBounds { start: u64, end: u64, len: u64 },
    /// The insert would leave more than `max_ranges` separate ranges.
    TooFragmented { max_ranges: usize },
    /// An encoded map failed a check; the text says which.
    Corrupt(String),
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresenceError::OutOfBounds { start, end, len } => write!(
                f,
                "byte range {start}..{end} is outside the data file of {len} bytes"
            ),
            PresenceError::TooFragmented { max_ranges } => write!(
                f,
                "the write would leave more than {max_ranges} separate present ranges; \
                 fill the gaps between earlier writes first"
            ),
            PresenceError::Corrupt(why) => write!(f, "corrupt presence map: {why}"),
        }
    }
}

impl std::error::Error for PresenceError {}

impl PresenceMap {
    /// An empty map of a data file of `len` bytes. `max_ranges` above
    /// `MAX_ENCODABLE_RANGES` is lowered to it so every map can be encoded.
    pub fn new(len: u64, max_ranges: usize) -> Self {
        PresenceMap {
            len,
            max_ranges: max_ranges.min(MAX_ENCODABLE_RANGES),
            ranges: Vec::new(),
        }
    }

    /// The size of the data file this map describes.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The most separate ranges this map will hold.
    #[cfg(test)]
    pub fn max_ranges(&self) -> usize {
        self.max_ranges
    }

    /// True if no byte is present.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The indices `[first, past)` of the ranges that `[start, end)` touches or is
    /// adjacent to: exactly the ranges an insert of it merges with.
    fn merge_span(&self, start: u64, end: u64) -> (usize, usize) {
        let first = self.ranges.partition_point(|&(_, r_end)| r_end < start);
        let past = self.ranges.partition_point(|&(r_start, _)| r_start <= end);
        (first, past.max(first))
    }

    fn check_bounds(&self, start: u64, end: u64) -> Result<(), PresenceError> {
        if start > end || end > self.len {
            return Err(PresenceError::OutOfBounds {
                start,
                end,
                len: self.len,
            });
        }
        Ok(())
    }

    /// Mark [start, end) present; merges with neighbours. start > end or end > len →
    /// OutOfBounds; would exceed max_ranges → TooFragmented (and the map is unchanged).
    /// An empty range is a no-op.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), PresenceError> {
        self.check_bounds(start, end)?;
        if start == end {
            return Ok(());
        }
        let (first, past) = self.merge_span(start, end);
        if first == past && self.ranges.len() >= self.max_ranges {
            return Err(PresenceError::TooFragmented {
                max_ranges: self.max_ranges,
            });
        }
        let last_merged = past.checked_sub(1).and_then(|last| self.ranges.get(last));
        let (merged_start, merged_end) = match (self.ranges.get(first), last_merged) {
            (Some(&(first_start, _)), Some(&(_, last_end))) if first < past => {
                (first_start.min(start), last_end.max(end))
            }
            _ => (start, end),
        };
        // The invariant that matters: the map never claims bytes outside the data file.
        assert!(
            merged_start < merged_end && merged_end <= self.len,
            "presence map would claim {merged_start}..{merged_end} of a {}-byte file",
            self.len
        );
        self.ranges
            .splice(first..past, std::iter::once((merged_start, merged_end)));
        // The map was sorted, disjoint and non-adjacent before; the merged range is apart from both
        // neighbours, so it still is (the full O(n) check runs in debug builds).
        let before = first.checked_sub(1).and_then(|i| self.ranges.get(i));
        assert!(
            before.is_none_or(|&(_, end)| end < merged_start)
                && self
                    .ranges
                    .get(first + 1)
                    .is_none_or(|&(start, _)| merged_end < start),
            "presence map insert of {start}..{end} left touching ranges"
        );
        assert!(
            self.ranges.len() <= self.max_ranges,
            "presence map past its bound"
        );
        debug_assert!(self.invariant_holds());
        Ok(())
    }

    /// Forget [start, end) (an evicted block): the range holding it may split in two. Refused
    /// (TooFragmented, the map unchanged) when that split would pass max_ranges.
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), PresenceError> {
        self.check_bounds(start, end)?;
        if start == end || !self.overlaps(start, end) {
            return Ok(());
        }
        let first = self.ranges.partition_point(|&(_, r_end)| r_end <= start);
        let past = self.ranges.partition_point(|&(r_start, _)| r_start < end);
        let mut kept = Vec::with_capacity(2);
        if let Some(&(a, _)) = self.ranges.get(first).filter(|r| r.0 < start) {
            kept.push((a, start));
        }
        if let Some(&(_, b)) = past
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .filter(|r| r.1 > end)
        {
            kept.push((end, b));
        }
        if self.ranges.len() - (past - first) + kept.len() > self.max_ranges {
            return Err(PresenceError::TooFragmented {
                max_ranges: self.max_ranges,
            });
        }
        self.ranges.splice(first..past, kept);
        assert!(
            !self.overlaps(start, end),
            "presence map still claims part of removed {start}..{end}"
        );
        debug_assert!(self.invariant_holds());
        Ok(())
    }

    /// Would inserting [start, end) exceed max_ranges? (so a writer can refuse before
    /// writing). False for an empty or out-of-bounds range: insert reports those itself.
    pub fn would_fragment(&self, start: u64, end: u64) -> bool {
        if self.check_bounds(start, end).is_err() || start == end {
            return false;
        }
        let (first, past) = self.merge_span(start, end);
        first == past && self.ranges.len() >= self.max_ranges
    }

    /// The range containing `offset`, if it is present.
    fn range_containing(&self, offset: u64) -> Option<(u64, u64)> {
        let after = self
            .ranges
            .partition_point(|&(r_start, _)| r_start <= offset);
        let candidate = *self.ranges.get(after.checked_sub(1)?)?;
        (offset < candidate.1).then_some(candidate)
    }

    #[cfg(test)]
    pub fn contains(&self, offset: u64) -> bool {
        self.range_containing(offset).is_some()
    }

    /// If offset is present: the end (exclusive) of the present run containing it.
    pub fn run_end(&self, offset: u64) -> Option<u64> {
        self.range_containing(offset).map(|(_, end)| end)
    }

    /// True if any byte of [start, end) is present.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        let first_ending_after = self.ranges.partition_point(|&(_, r_end)| r_end <= start);
        self.ranges
            .get(first_ending_after)
            .is_some_and(|&(r_start, _)| r_start < end)
    }

    /// The first byte not present at or after `from` (None if all of [from, len) is present).
    pub fn first_missing_from(&self, from: u64) -> Option<u64> {
        if from >= self.len {
            return None;
        }
        match self.range_containing(from) {
            None => Some(from),
            // Ranges are non-adjacent, so the byte at a range's end is missing.
            Some((_, end)) => (end < self.len).then_some(end),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.present_bytes() == self.len
    }

    pub fn present_bytes(&self) -> u64 {
        // Ranges are disjoint and inside [0, len), so the sum cannot exceed len.
        self.ranges.iter().map(|&(start, end)| end - start).sum()
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Forget every present byte (the data file itself is left alone).
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The missing sub-ranges of [start, end), in order. Bytes at or past `len` are not
    /// part of the data file and are never reported; a reversed range has none.
    pub fn missing_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let end = end.min(self.len);
        let mut missing = Vec::new();
        if start >= end {
            return missing;
        }
        let mut cursor = start;
        let first_ending_after = self.ranges.partition_point(|&(_, r_end)| r_end <= start);
        for &(r_start, r_end) in self.ranges.iter().skip(first_ending_after) {
            if r_start >= end {
                break;
            }
            if r_start > cursor {
                missing.push((cursor, r_start));
            }
            cursor = cursor.max(r_end);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            missing.push((cursor, end));
        }
        missing
    }

    /// Serialize: count u32 LE, then (start u64 LE, end u64 LE) each.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        // new() caps max_ranges at MAX_ENCODABLE_RANGES, so the count fits a u32.
        let count = u32::try_from(self.ranges.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for &(start, end) in &self.ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
    }

    /// Parse what `encode` wrote for a data file of `len` bytes. Checks sorted, disjoint,
    /// non-adjacent, non-empty ranges inside len, count <= max_ranges and the exact
    /// length; anything else is Corrupt.
    pub fn decode(bytes: &[u8], len: u64, max_ranges: usize) -> Result<Self, PresenceError> {
        let corrupt = |why: String| PresenceError::Corrupt(why);
        let (count_bytes, body) =
            bytes
                .split_first_chunk::<ENCODED_COUNT_LEN>()
                .ok_or_else(|| {
                    corrupt(format!(
                        "{} bytes, too short for the {ENCODED_COUNT_LEN}-byte range count",
                        bytes.len()
                    ))
                })?;
        let count = u32::from_le_bytes(*count_bytes);
        let mut map = PresenceMap::new(len, max_ranges);
        let count = usize::try_from(count)
            .ok()
            .filter(|&count| count <= map.max_ranges)
            .ok_or_else(|| {
                corrupt(format!(
                    "{count} ranges, more than the limit of {}",
                    map.max_ranges
                ))
            })?;
        let expected_body = count.checked_mul(ENCODED_RANGE_LEN);
        if expected_body != Some(body.len()) {
            return Err(corrupt(format!(
                "{count} ranges need {} bytes after the count, found {}",
                count.saturating_mul(ENCODED_RANGE_LEN),
                body.len()
            )));
        }
        map.ranges.reserve_exact(count);
        let mut previous_end: Option<u64> = None;
        for (index, chunk) in body.chunks_exact(ENCODED_RANGE_LEN).enumerate() {
            let (start_bytes, end_bytes) = chunk
                .split_first_chunk::<8>()
                .and_then(|(start, rest)| Some((start, rest.first_chunk::<8>()?)))
                .ok_or_else(|| corrupt(format!("range {index} is cut short")))?;
            let start = u64::from_le_bytes(*start_bytes);
            let end = u64::from_le_bytes(*end_bytes);
            if start >= end {
                return Err(corrupt(format!("range {index} ({start}..{end}) is empty")));
            }
            if end > len {
                return Err(corrupt(format!(
                    "range {index} ({start}..{end}) ends past the data file of {len} bytes"
                )));
            }
            if let Some(previous_end) = previous_end
                && start <= previous_end
            {
                return Err(corrupt(format!(
                    "range {index} ({start}..{end}) is not after the previous range's \
                     end {previous_end} with a gap"
                )));
            }
            previous_end = Some(end);
            map.ranges.push((start, end));
        }
        debug_assert!(map.invariant_holds());
        Ok(map)
    }

    pub fn encoded_len(&self) -> usize {
        // At most MAX_ENCODABLE_RANGES ranges, so this cannot overflow on 64-bit targets.
        ENCODED_COUNT_LEN.saturating_add(self.ranges.len().saturating_mul(ENCODED_RANGE_LEN))
    }

    /// The full structural invariant; O(n), for debug assertions and tests.
    fn invariant_holds(&self) -> bool {
        self.ranges.len() <= self.max_ranges
            && self
                .ranges
                .iter()
                .all(|&(start, end)| start < end && end <= self.len)
            && self.ranges.windows(2).all(|pair| match pair {
                [(_, previous_end), (next_start, _)] => previous_end < next_start,
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic xorshift64 generator, so the property tests need no crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn map_with(len: u64, max_ranges: usize, ranges: &[(u64, u64)]) -> PresenceMap {
        let mut map = PresenceMap::new(len, max_ranges);
        for &(start, end) in ranges {
            map.insert(start, end).unwrap();
        }
        map
    }

    fn encoded(ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut out = (ranges.len() as u32).to_le_bytes().to_vec();
        for &(start, end) in ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        out
    }

    /// The ranges a Vec<bool> model describes.
    fn model_ranges(model: &[bool]) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        let mut run_start = None;
        for (index, &present) in model.iter().enumerate() {
            match (present, run_start) {
                (true, None) => run_start = Some(index as u64),
                (false, Some(start)) => {
                    ranges.push((start, index as u64));
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            ranges.push((start, model.len() as u64));
        }
        ranges
    }

    #[test]
    fn new_map_is_empty() {
        let map = PresenceMap::new(100, 4);
        assert_eq!(map.len(), 100);
        assert!(map.is_empty());
        assert_eq!(map.present_bytes(), 0);
        assert!(!map.is_complete());
        assert_eq!(map.first_missing_from(0), Some(0));
        assert!(!map.contains(0));
    }

    #[test]
    fn zero_length_map_is_complete() {
        let map = PresenceMap::new(0, 4);
        assert!(map.is_complete());
        assert_eq!(map.first_missing_from(0), None);
        assert_eq!(map.missing_in(0, 10), vec![]);
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent() {
        let mut map = map_with(100, 8, &[(10, 20), (30, 40)]);
        assert_eq!(map.ranges(), &[(10, 20), (30, 40)]);
        map.insert(20, 25).unwrap(); // adjacent on the left
        assert_eq!(map.ranges(), &[(10, 25), (30, 40)]);
        map.insert(25, 30).unwrap(); // bridges both
        assert_eq!(map.ranges(), &[(10, 40)]);
        map.insert(5, 10).unwrap(); // adjacent on the right
        assert_eq!(map.ranges(), &[(5, 40)]);
        map.insert(0, 100).unwrap(); // swallows everything
        assert_eq!(map.ranges(), &[(0, 100)]);
        assert!(map.is_complete());
    }

    #[test]
    fn insert_inside_existing_range_changes_nothing() {
        let mut map = map_with(100, 1, &[(10, 50)]);
        map.insert(20, 30).unwrap();
        assert_eq!(map.ranges(), &[(10, 50)]);
    }

    #[test]
    fn insert_empty_range_is_noop_even_at_len() {
        let mut map = map_with(100, 1, &[(10, 20)]);
        map.insert(50, 50).unwrap();
        map.insert(100, 100).unwrap();
        assert_eq!(map.ranges(), &[(10, 20)]);
    }

    #[test]
    fn insert_out_of_bounds() {
        let mut map = PresenceMap::new(100, 4);
        assert_eq!(
            map.insert(90, 101),
            Err(PresenceError::OutOfBounds {
                start: 90,
                end: 101,
                len: 100
            })
        );
        assert_eq!(
            map.insert(20, 10),
            Err(PresenceError::OutOfBounds {
                start: 20,
                end: 10,
                len: 100
            })
        );
        assert!(map.insert(101, 101).is_err());
        assert!(map.insert(u64::MAX - 1, u64::MAX).is_err());
        assert!(map.is_empty());
        map.insert(0, 100).unwrap();
        assert!(map.is_complete());
    }

    #[test]
    fn insert_too_fragmented_leaves_map_unchanged() {
        let mut map = map_with(100, 2, &[(0, 10), (20, 30)]);
        assert!(map.would_fragment(40, 50));
        assert_eq!(
            map.insert(40, 50),
            Err(PresenceError::TooFragmented { max_ranges: 2 })
        );
        assert_eq!(map.ranges(), &[(0, 10), (20, 30)]);
        // Merging inserts still work at the limit.
        assert!(!map.would_fragment(30, 50));
        map.insert(30, 50).unwrap();
        assert!(!map.would_fragment(10, 20));
        map.insert(10, 20).unwrap();
        assert_eq!(map.ranges(), &[(0, 50)]);
    }

    #[test]
    fn max_ranges_zero_refuses_every_nonempty_insert() {
        let mut map = PresenceMap::new(10, 0);
        assert!(map.would_fragment(0, 1));
        assert_eq!(
            map.insert(0, 1),
            Err(PresenceError::TooFragmented { max_ranges: 0 })
        );
        map.insert(3, 3).unwrap();
        assert!(map.is_empty());
    }

    #[test]
    fn would_fragment_is_false_for_invalid_or_empty() {
        let map = map_with(100, 1, &[(0, 10)]);
        assert!(!map.would_fragment(50, 50));
        assert!(!map.would_fragment(50, 40));
        assert!(!map.would_fragment(50, 101));
        assert!(map.would_fragment(50, 60));
    }

    #[test]
    fn contains_and_run_end_at_boundaries() {
        let map = map_with(100, 4, &[(10, 20), (30, 40)]);
        assert!(!map.contains(9));
        assert!(map.contains(10));
        assert!(map.contains(19));
        assert!(!map.contains(20));
        assert!(!map.contains(29));
        assert!(map.contains(30));
        assert!(!map.contains(40));
        assert!(!map.contains(u64::MAX));
        assert_eq!(map.run_end(10), Some(20));
        assert_eq!(map.run_end(19), Some(20));
        assert_eq!(map.run_end(20), None);
        assert_eq!(map.run_end(35), Some(40));
        assert_eq!(map.run_end(0), None);
    }

    #[test]
    fn overlaps_at_boundaries() {
        let map = map_with(100, 4, &[(10, 20), (30, 40)]);
        assert!(!map.overlaps(0, 10));
        assert!(map.overlaps(0, 11));
        assert!(map.overlaps(19, 30));
        assert!(!map.overlaps(20, 30));
        assert!(map.overlaps(20, 31));
        assert!(!map.overlaps(40, 100));
        assert!(!map.overlaps(15, 15));
        assert!(!map.overlaps(20, 10));
        assert!(map.overlaps(0, u64::MAX));
    }

    #[test]
    fn first_missing_from_cases() {
        let map = map_with(100, 4, &[(0, 20), (30, 100)]);
        assert_eq!(map.first_missing_from(0), Some(20));
        assert_eq!(map.first_missing_from(19), Some(20));
        assert_eq!(map.first_missing_from(25), Some(25));
        assert_eq!(map.first_missing_from(30), None);
        assert_eq!(map.first_missing_from(99), None);
        assert_eq!(map.first_missing_from(100), None);
        assert_eq!(map.first_missing_from(u64::MAX), None);
        let partial = map_with(100, 4, &[(0, 50)]);
        assert_eq!(partial.first_missing_from(10), Some(50));
    }

    #[test]
    fn missing_in_cases() {
        let map = map_with(100, 4, &[(10, 20), (30, 40)]);
        assert_eq!(map.missing_in(0, 100), vec![(0, 10), (20, 30), (40, 100)]);
        assert_eq!(map.missing_in(10, 40), vec![(20, 30)]);
        assert_eq!(map.missing_in(15, 35), vec![(20, 30)]);
        assert_eq!(map.missing_in(12, 18), vec![]);
        assert_eq!(map.missing_in(20, 30), vec![(20, 30)]);
        assert_eq!(map.missing_in(50, 50), vec![]);
        assert_eq!(map.missing_in(60, 50), vec![]);
        // Clamped to the data file.
        assert_eq!(map.missing_in(90, 200), vec![(90, 100)]);
        assert_eq!(map.missing_in(150, 200), vec![]);
    }

    #[test]
    fn present_bytes_and_clear() {
        let mut map = map_with(100, 4, &[(10, 20), (30, 45)]);
        assert_eq!(map.present_bytes(), 25);
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.present_bytes(), 0);
        assert_eq!(map.len(), 100);
    }

    #[test]
    fn max_ranges_is_capped_to_encodable() {
        let map = PresenceMap::new(10, usize::MAX);
        assert_eq!(map.max_ranges(), MAX_ENCODABLE_RANGES);
    }

    #[test]
    fn encode_decode_round_trip() {
        for ranges in [vec![], vec![(0, 100)], vec![(1, 2), (4, 8), (50, 99)]] {
            let map = map_with(100, 8, &ranges);
            let mut out = vec![0xAA]; // encode appends
            map.encode(&mut out);
            assert_eq!(out.len(), 1 + map.encoded_len());
            assert_eq!(&out[1..], encoded(&ranges).as_slice());
            let decoded = PresenceMap::decode(&out[1..], 100, 8).unwrap();
            assert_eq!(decoded, map);
        }
    }

    #[test]
    fn decode_rejects_every_malformed_form() {
        let bad = |bytes: &[u8], len: u64, max: usize| {
            assert!(
                matches!(
                    PresenceMap::decode(bytes, len, max),
                    Err(PresenceError::Corrupt(_))
                ),
                "accepted {bytes:?}"
            )
        };
        bad(&[], 100, 8); // no count
        bad(&[1, 0, 0], 100, 8); // short count
        let one = encoded(&[(10, 20)]);
        bad(&one[..one.len() - 1], 100, 8); // truncated range
        let mut long = one.clone();
        long.push(0);
        bad(&long, 100, 8); // trailing byte
        bad(&encoded(&[(10, 20), (30, 40)]), 100, 1); // too many ranges
        bad(&encoded(&[(10, 10)]), 100, 8); // empty range
        bad(&encoded(&[(20, 10)]), 100, 8); // reversed
        bad(&encoded(&[(90, 101)]), 100, 8); // past len
        bad(&encoded(&[(30, 40), (10, 20)]), 100, 8); // unsorted
        bad(&encoded(&[(10, 30), (20, 40)]), 100, 8); // overlapping
        bad(&encoded(&[(10, 20), (20, 40)]), 100, 8); // adjacent
        bad(&encoded(&[(10, 20), (10, 20)]), 100, 8); // duplicate
        let mut huge_count = u32::MAX.to_le_bytes().to_vec();
        huge_count.extend_from_slice(&[0; 16]);
        bad(&huge_count, 100, usize::MAX); // count disagrees with length
        // And the boundary that is fine: ending exactly at len, count exactly max.
        assert!(PresenceMap::decode(&encoded(&[(0, 10), (90, 100)]), 100, 2).is_ok());
    }

    #[test]
    fn random_inserts_match_bool_model() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let len = 1 + rng.below(200);
            let max_ranges = 1 + rng.below(12) as usize;
            let mut map = PresenceMap::new(len, max_ranges);
            let mut model = vec![false; len as usize];
            for _ in 0..60 {
                // Occasionally out of bounds or reversed.
                let start = rng.below(len + 3);
                let end = if rng.below(10) == 0 {
                    rng.below(len + 3)
                } else {
                    (start + rng.below(len / 4 + 2)).min(len + 2)
                };
                let before = map.clone();
                let would_fragment = map.would_fragment(start, end);
                match map.insert(start, end) {
                    Ok(()) => {
                        assert!(start <= end && end <= len, "round {round}");
                        assert!(!would_fragment);
                        for byte in &mut model[start as usize..end as usize] {
                            *byte = true;
                        }
                    }
                    Err(PresenceError::OutOfBounds { .. }) => {
                        assert!(start > end || end > len, "round {round}");
                        assert_eq!(map, before);
                    }
                    Err(PresenceError::TooFragmented { max_ranges: m }) => {
                        assert!(would_fragment);
                        assert_eq!(m, max_ranges);
                        assert_eq!(map, before);
                        let mut wider = model.clone();
                        for byte in &mut wider[start as usize..end as usize] {
                            *byte = true;
                        }
                        assert!(model_ranges(&wider).len() > max_ranges);
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
                assert!(map.invariant_holds());
                assert_eq!(map.ranges(), model_ranges(&model).as_slice());
                assert_eq!(
                    map.present_bytes(),
                    model.iter().filter(|&&b| b).count() as u64
                );
                assert_eq!(map.is_complete(), model.iter().all(|&b| b));
                for probe in 0..len + 2 {
                    let present = model.get(probe as usize).copied().unwrap_or(false);
                    assert_eq!(map.contains(probe), present);
                    let expected_run_end =
                        present.then(|| (probe..len).find(|&i| !model[i as usize]).unwrap_or(len));
                    assert_eq!(map.run_end(probe), expected_run_end);
                    let expected_missing = (probe..len).find(|&i| !model[i as usize]);
                    assert_eq!(map.first_missing_from(probe), expected_missing);
                }
                let a = rng.below(len + 3);
                let b = rng.below(len + 3);
                let expected_overlap = (a..b.min(len)).any(|i| model[i as usize]);
                assert_eq!(map.overlaps(a, b), expected_overlap);
                let mut gaps = vec![false; len as usize];
                for (s, e) in map.missing_in(a, b) {
                    assert!(a <= s && s < e && e <= b.min(len));
                    for byte in &mut gaps[s as usize..e as usize] {
                        *byte = true;
                    }
                }
                for i in 0..len {
                    let in_query = a <= i && i < b;
                    assert_eq!(gaps[i as usize], in_query && !model[i as usize]);
                }
                let mut bytes = Vec::new();
                map.encode(&mut bytes);
                assert_eq!(PresenceMap::decode(&bytes, len, max_ranges).unwrap(), map);
            }
        }
    }

    #[test]
    fn remove_splits_trims_and_refuses_past_the_bound() {
        let mut m = PresenceMap::new(100, 3);
        m.insert(0, 50).unwrap();
        m.insert(60, 90).unwrap();
        m.remove(10, 20).unwrap();
        assert_eq!(m.ranges(), &[(0, 10), (20, 50), (60, 90)]);
        // A fourth range would pass the bound: refused, unchanged.
        assert!(m.remove(30, 40).is_err());
        assert_eq!(m.ranges().len(), 3);
        // Trimming ends and removing whole ranges never adds one.
        m.remove(45, 70).unwrap();
        assert_eq!(m.ranges(), &[(0, 10), (20, 45), (70, 90)]);
        m.remove(0, 100).unwrap();
        assert!(m.is_empty());
        m.remove(5, 6).unwrap();
        assert!(m.remove(5, 200).is_err());
    }
}
