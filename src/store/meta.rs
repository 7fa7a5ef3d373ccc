//! The metadata commit record of one video and the `<id>.meta` file that holds it.
//! The file holds record slots — durable ones (pwrite + fdatasync after the data is synced), in pairs
//! that grow with the record, and two log regions (plain pwrite, stamped with the kernel's boot id) —
//! each record checksummed and sequence-numbered; on open the newest trusted durable record wins and
//! the log entries after it are replayed. A `Layout` header says where each slot is; files of the
//! first format (four slots of 1 MiB, no header) are read as `Layout::LEGACY`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Record slots of a file of the first format (and of a new file before any durable pair grew).
pub const RECORD_SLOT_COUNT: usize = 4;
/// The largest record slot (header + payload): a durable slot never grows past it.
pub const RECORD_SLOT_SIZE: u64 = 1 << 20;
/// The first pair of durable slots, written alternately by the sync thread, with fdatasync, only after
/// the data was synced. Larger pairs follow the log regions (`Layout::pair_slots`).
pub const DURABLE_RECORD_SLOTS: [RecordSlot; 2] = [0, 1];
/// The two log regions, appended to by the event loop with a plain pwrite; trusted only in the same
/// boot.
pub const FAST_RECORD_SLOTS: [RecordSlot; 2] = [2, 3];
/// The index of a record slot in a metadata file: 0 and 1 the first durable pair, 2 and 3 the log
/// regions, 4 and 5 the second durable pair, and so on — where a record goes, not the data `Slot` of
/// an upload.
pub type RecordSlot = usize;
/// Size of a metadata file of the first format: four record slots of 1 MiB, back to back.
pub const META_FILE_LEN: u64 = RECORD_SLOT_COUNT as u64 * RECORD_SLOT_SIZE;
/// First bytes of a metadata file with a layout header.
pub const LAYOUT_MAGIC: [u8; 8] = *b"VCACHEL1";
/// The layout header's room (one page: the first record slot starts page-aligned).
const LAYOUT_HEADER_LEN: u64 = 4096;
/// The first durable pair of a new file: 8 KiB slots hold a record of ~440 ranges (and the longest
/// validator); a record that does not fit goes to the next pair, twice as large, up to 1 MiB.
const FIRST_DURABLE_SLOT: u64 = 8 << 10;
/// Log regions are 1/8 of the data, between these bounds: a region holds the deltas acknowledged
/// between two durable commits (a full one makes the next acknowledgements wait for a durable commit;
/// 1 MiB holds ~11,000 deltas).
const MIN_LOG_REGION: u64 = 16 << 10;
const MAX_LOG_REGION: u64 = 1 << 20;

/// Where the record slots of one metadata file are: a page of header, the first durable pair, the
/// two log regions, then the larger durable pairs (each twice the previous) as they are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    header: u64,
    first_slot: u64,
    log_region: u64,
}

impl Layout {
    /// The first format: no header, four slots of 1 MiB.
    pub const LEGACY: Layout = Layout {
        header: 0,
        first_slot: RECORD_SLOT_SIZE,
        log_region: RECORD_SLOT_SIZE,
    };

    /// The layout of a new metadata file for a video of `data_len` bytes.
    pub fn for_data_len(data_len: u64) -> Layout {
        let log_region = (data_len / 8)
            .checked_next_power_of_two()
            .unwrap_or(MAX_LOG_REGION)
            .clamp(MIN_LOG_REGION, MAX_LOG_REGION);
        Layout {
            header: LAYOUT_HEADER_LEN,
            first_slot: FIRST_DURABLE_SLOT,
            log_region,
        }
    }

    /// Bytes of each log region.
    pub fn log_region_len(&self) -> u64 {
        self.log_region
    }

    /// How many durable pairs the layout can have (the last one's slots are RECORD_SLOT_SIZE).
    pub fn pairs(&self) -> usize {
        let mut pairs = 1;
        while (self.first_slot << (pairs - 1)) < RECORD_SLOT_SIZE {
            pairs += 1;
        }
        pairs
    }

    /// The two record slots of durable pair `pair`.
    pub fn pair_slots(pair: usize) -> [RecordSlot; 2] {
        match pair {
            0 => DURABLE_RECORD_SLOTS,
            k => [2 + 2 * k, 3 + 2 * k],
        }
    }

    /// The durable pair a durable record slot belongs to (None for a log region).
    pub fn pair_of(slot: RecordSlot) -> Option<usize> {
        match slot {
            0 | 1 => Some(0),
            2 | 3 => None,
            s => Some((s - 2) / 2),
        }
    }

    fn pair_slot_len(&self, pair: usize) -> u64 {
        self.first_slot << pair
    }

    /// Offset and length of a record slot, None if the layout has no such slot.
    pub fn slot_range(&self, slot: RecordSlot) -> Option<(u64, u64)> {
        let after_first = self.header + 2 * self.first_slot;
        match slot {
            0 | 1 => Some((self.header + slot as u64 * self.first_slot, self.first_slot)),
            2 | 3 => Some((
                after_first + (slot as u64 - 2) * self.log_region,
                self.log_region,
            )),
            s => {
                let pair = Self::pair_of(s)?;
                if pair >= self.pairs() {
                    return None;
                }
                let mut at = after_first + 2 * self.log_region;
                for k in 1..pair {
                    at += 2 * self.pair_slot_len(k);
                }
                let len = self.pair_slot_len(pair);
                Some((at + (s as u64 % 2) * len, len))
            }
        }
    }

    /// The file's length when only the first durable pair exists.
    pub fn initial_len(&self) -> u64 {
        self.header + 2 * self.first_slot + 2 * self.log_region
    }

    /// The durable record slots inside `file_len` bytes, pair by pair.
    pub fn durable_slots_within(&self, file_len: u64) -> Vec<RecordSlot> {
        (0..self.pairs())
            .flat_map(Self::pair_slots)
            .filter(|&s| {
                self.slot_range(s)
                    .is_some_and(|(at, len)| at + len <= file_len)
            })
            .collect()
    }

    /// Where a durable record of `record_len` bytes goes when `preferred` is next: there if it fits,
    /// else the first slot of the smallest larger pair that holds it (a pair is never written again
    /// once a larger one is used, so the newest good record is never overwritten).
    pub fn durable_slot_for(&self, preferred: RecordSlot, record_len: usize) -> RecordSlot {
        let fits = |s: RecordSlot| {
            self.slot_range(s)
                .is_some_and(|(_, len)| record_len as u64 <= len)
        };
        if fits(preferred) {
            return preferred;
        }
        let from = Self::pair_of(preferred).unwrap_or(0) + 1;
        (from..self.pairs())
            .map(|k| Self::pair_slots(k)[0])
            .find(|&s| fits(s))
            .unwrap_or(Self::pair_slots(self.pairs() - 1)[0])
    }

    fn encode_header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(&LAYOUT_MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for v in [self.header, self.first_slot, self.log_region] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h
    }

    /// The layout a header records, if it verifies and is one this build can use.
    fn decode_header(bytes: &[u8]) -> Option<Layout> {
        let body = bytes.get(..36)?;
        let crc = u32::from_le_bytes(bytes.get(36..40)?.try_into().ok()?);
        if body.get(..8)? != LAYOUT_MAGIC || crc32c(body) != crc {
            return None;
        }
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        let layout = Layout {
            header: word(12)?,
            first_slot: word(20)?,
            log_region: word(28)?,
        };
        let sane = layout.header >= 40
            && [layout.first_slot, layout.log_region]
                .iter()
                .all(|&n| n.is_power_of_two() && (HEADER_LEN as u64) < n && n <= RECORD_SLOT_SIZE);
        sane.then_some(layout)
    }
}

/// The kernel's random boot id, as 16 bytes.
pub type BootId = [u8; 16];
/// A boot id the kernel never hands out (the nil uuid): scanning with it trusts no fast record.
pub const UNKNOWN_BOOT: BootId = [0; 16];
/// Where Linux publishes the boot id.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Length of the textual uuid form of the boot id.
const BOOT_ID_TEXT_LEN: usize = 36;

/// First bytes of every record.
pub const MAGIC: [u8; 8] = *b"VCACHEM1";
/// First bytes of a delta entry in a log region (same layout as a record otherwise).
pub const DELTA_MAGIC: [u8; 8] = *b"VCACHED1";
/// How much of a log region is read at a time.
const LOG_READ_CHUNK: usize = 64 * 1024;
/// The record layout version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

// Header layout (all little-endian): the byte range of each field.
const MAGIC_AT: std::ops::Range<usize> = 0..8;
const VERSION_AT: std::ops::Range<usize> = 8..12;
const SEQ_AT: std::ops::Range<usize> = 12..20;
const BOOT_ID_AT: std::ops::Range<usize> = 20..36;
const VIDEO_KIND_AT: usize = 36;
const DATA_LEN_AT: std::ops::Range<usize> = 37..45;
const PAYLOAD_LEN_AT: std::ops::Range<usize> = 45..49;
const CRC_AT: std::ops::Range<usize> = 49..53;
/// Bytes of the fixed header; the payload follows it.
pub const HEADER_LEN: usize = 53;
/// The largest payload that fits the largest record slot.
pub const MAX_PAYLOAD_LEN: usize = RECORD_SLOT_SIZE as usize - HEADER_LEN;
/// Chunk size used to check that a record slot whose header is zero is zero throughout.
const ZERO_SCAN_CHUNK: usize = 64 * 1024;

/// The kernel's boot id from /proc/sys/kernel/random/boot_id (36-char uuid → 16 bytes).
pub fn current_boot_id() -> io::Result<BootId> {
    let text = std::fs::read_to_string(BOOT_ID_PATH)?;
    parse_boot_id(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{BOOT_ID_PATH} holds {text:?}, not a uuid"),
        )
    })
}

/// Parse a uuid `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case) into 16 bytes.
pub fn parse_boot_id(text: &str) -> Option<BootId> {
    const HYPHENS_AT: [usize; 4] = [8, 13, 18, 23];
    let text = text.as_bytes();
    if text.len() != BOOT_ID_TEXT_LEN {
        return None;
    }
    let mut digits = Vec::with_capacity(32);
    for (index, &byte) in text.iter().enumerate() {
        if HYPHENS_AT.contains(&index) {
            if byte != b'-' {
                return None;
            }
        } else {
            digits.push(char::from(byte).to_digit(16)?);
        }
    }
    let mut id = [0u8; 16];
    for (out, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
        if let [high, low] = pair {
            *out = u8::try_from(high * 16 + low).ok()?;
        }
    }
    Some(id)
}

/// Reflected Castagnoli polynomial.
const CRC32C_POLY: u32 = 0x82F6_3B78;

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

static CRC32C_TABLE: [u32; 256] = crc32c_table();

/// crc32c (Castagnoli), table-driven, no crate.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_extend(0, data)
}

/// Continue a crc32c: `crc32c_extend(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    let mut state = !crc;
    for &byte in data {
        // The index is masked to 0..=255, inside the 256-entry table.
        state = CRC32C_TABLE[((state ^ u32::from(byte)) & 0xFF) as usize] ^ (state >> 8);
    }
    !state
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRecord {
    pub seq: u64,
    pub boot_id: BootId,
    /// Opaque here: the store's kind code.
    pub video_kind: u8,
    /// Size of the data file the record describes.
    pub data_len: u64,
    /// Opaque here: presence map and kind-specific fields.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    TooLarge {
        payload: usize,
        max: usize,
    },
    BadMagic,
    BadVersion(u32),
    BadChecksum,
    Truncated,
    Io(String),
    /// Added: a record slot index outside 0..RECORD_SLOT_COUNT.
    BadRecordSlot(RecordSlot),
    /// Added: the file holds records but none verifies; the text says what each record slot holds.
    /// Never treat this as a fresh file.
    NoValidRecordSlot(String),
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::TooLarge { payload, max } => write!(
                f,
                "metadata payload of {payload} bytes exceeds the record_slot's {max}-byte limit"
            ),
            MetaError::BadMagic => write!(f, "not a vcache metadata record (bad magic)"),
            MetaError::BadVersion(version) => write!(
                f,
                "metadata format version {version}, this build reads {FORMAT_VERSION}"
            ),
            MetaError::BadChecksum => write!(f, "metadata checksum mismatch (torn or corrupt)"),
            MetaError::Truncated => write!(f, "metadata record is cut short"),
            MetaError::Io(why) => write!(f, "metadata I/O error: {why}"),
            MetaError::BadRecordSlot(record_slot) => {
                write!(
                    f,
                    "metadata record_slot {record_slot} does not exist in this file's layout"
                )
            }
            MetaError::NoValidRecordSlot(record_slots) => write!(
                f,
                "metadata unreadable, no record_slot verifies ({record_slots}); \
                 the file was left untouched"
            ),
        }
    }
}

impl std::error::Error for MetaError {}

/// Fixed header: magic b"VCACHEM1", format version u32, seq u64, boot_id, video_kind u8,
/// data_len u64, payload_len u32, crc32c u32 over header-without-crc + payload. All LE.
/// TooLarge if header + payload exceed RECORD_SLOT_SIZE.
pub fn encode_record(rec: &MetaRecord) -> Result<Vec<u8>, MetaError> {
    encode_with_magic(rec, &MAGIC)
}

/// A delta entry of a log region: the record layout under DELTA_MAGIC.
pub fn encode_delta(rec: &MetaRecord) -> Result<Vec<u8>, MetaError> {
    encode_with_magic(rec, &DELTA_MAGIC)
}

fn encode_with_magic(rec: &MetaRecord, magic: &[u8; 8]) -> Result<Vec<u8>, MetaError> {
    let too_large = MetaError::TooLarge {
        payload: rec.payload.len(),
        max: MAX_PAYLOAD_LEN,
    };
    if rec.payload.len() > MAX_PAYLOAD_LEN {
        return Err(too_large);
    }
    let payload_len = u32::try_from(rec.payload.len()).map_err(|_| too_large)?;
    let mut out = Vec::with_capacity(HEADER_LEN + rec.payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&rec.seq.to_le_bytes());
    out.extend_from_slice(&rec.boot_id);
    out.push(rec.video_kind);
    out.extend_from_slice(&rec.data_len.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    debug_assert_eq!(out.len(), CRC_AT.start);
    let crc = crc32c_extend(crc32c(&out), &rec.payload);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&rec.payload);
    Ok(out)
}

/// Read a fixed-size little-endian field; the ranges are constants inside HEADER_LEN.
fn field<const N: usize>(header: &[u8], at: std::ops::Range<usize>) -> Result<[u8; N], MetaError> {
    header
        .get(at)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(MetaError::Truncated)
}

/// Parse and verify a record; `record_slot` may be longer than the record (the rest is ignored).
pub fn decode_record(record_slot: &[u8]) -> Result<MetaRecord, MetaError> {
    match decode_entry(record_slot)? {
        LogEntry {
            delta: false,
            record,
        } => Ok(record),
        LogEntry { delta: true, .. } => Err(MetaError::BadMagic),
    }
}

/// Parse and verify a whole record or a delta entry (a log region holds both).
pub fn decode_entry(record_slot: &[u8]) -> Result<LogEntry, MetaError> {
    let header = record_slot.get(..HEADER_LEN).ok_or(MetaError::Truncated)?;
    let magic = field::<8>(header, MAGIC_AT)?;
    if magic != MAGIC && magic != DELTA_MAGIC {
        return Err(MetaError::BadMagic);
    }
    let version = u32::from_le_bytes(field(header, VERSION_AT)?);
    if version != FORMAT_VERSION {
        return Err(MetaError::BadVersion(version));
    }
    let payload_len = u32::from_le_bytes(field(header, PAYLOAD_LEN_AT)?);
    let payload_len = usize::try_from(payload_len)
        .ok()
        .filter(|&len| len <= MAX_PAYLOAD_LEN)
        .ok_or(MetaError::TooLarge {
            payload: payload_len as usize,
            max: MAX_PAYLOAD_LEN,
        })?;
    let payload = record_slot
        .get(HEADER_LEN..HEADER_LEN + payload_len)
        .ok_or(MetaError::Truncated)?;
    let stored_crc = u32::from_le_bytes(field(header, CRC_AT)?);
    let header_without_crc = header.get(..CRC_AT.start).ok_or(MetaError::Truncated)?;
    if crc32c_extend(crc32c(header_without_crc), payload) != stored_crc {
        return Err(MetaError::BadChecksum);
    }
    let record = MetaRecord {
        seq: u64::from_le_bytes(field(header, SEQ_AT)?),
        boot_id: field(header, BOOT_ID_AT)?,
        video_kind: *header.get(VIDEO_KIND_AT).ok_or(MetaError::Truncated)?,
        data_len: u64::from_le_bytes(field(header, DATA_LEN_AT)?),
        payload: payload.to_vec(),
    };
    Ok(LogEntry {
        delta: magic == DELTA_MAGIC,
        record,
    })
}

/// One entry of a log region (record slots 2 and 3): a whole record (a live ring's state, or a fast
/// record written by an older vcache) or a delta (what an upload slot claimed since its last entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub delta: bool,
    pub record: MetaRecord,
}

/// What one log region holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogParse {
    /// How the region reads for `describe`: Valid carries the last trusted seq.
    pub state: RecordSlotState,
    /// The trusted entries, in the order written (increasing seq).
    pub entries: Vec<LogEntry>,
    /// The highest seq of any verifying entry, trusted or not.
    pub max_seq: Option<u64>,
}

/// Parse a log region from its start: entries follow each other back to back; the chain stops at the
/// first entry that is zero, does not verify, comes from another boot, or does not raise the seq.
pub fn parse_log(bytes: &[u8], current_boot: &BootId) -> LogParse {
    let mut parse = LogParse {
        state: RecordSlotState::Empty,
        entries: Vec::new(),
        max_seq: None,
    };
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..).filter(|r| r.len() >= HEADER_LEN) {
        if rest[..HEADER_LEN].iter().all(|&b| b == 0) {
            break;
        }
        let entry = match decode_entry(rest) {
            Ok(entry) => entry,
            Err(why) => {
                if at == 0 {
                    parse.state = RecordSlotState::Invalid(why);
                }
                break;
            }
        };
        let seq = entry.record.seq;
        parse.max_seq = parse.max_seq.max(Some(seq));
        let trusted = entry.record.boot_id == *current_boot;
        let raises = parse.entries.last().is_none_or(|e| e.record.seq < seq);
        if at == 0 || (trusted && raises) {
            parse.state = RecordSlotState::Valid { seq, trusted };
        }
        if !trusted || !raises {
            break;
        }
        at += HEADER_LEN + entry.record.payload.len();
        parse.entries.push(entry);
    }
    parse
}

/// How far a walk over entry headers gets in `bytes` (no checksums): where a log region's chain may
/// end. `None` if it runs off the end of `bytes` (read more).
fn log_walk_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        let header = bytes.get(at..at + HEADER_LEN)?;
        let magic = field::<8>(header, MAGIC_AT).ok()?;
        if magic != MAGIC && magic != DELTA_MAGIC {
            return Some(at);
        }
        let len = field::<4>(header, PAYLOAD_LEN_AT)
            .map(u32::from_le_bytes)
            .ok()? as usize;
        if len > MAX_PAYLOAD_LEN {
            return Some(at);
        }
        at += HEADER_LEN + len;
    }
}

/// What one record slot was found to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSlotState {
    /// Never written (unreadable, or all zero).
    Empty,
    /// A record that verifies; `trusted` is false for a fast record slot from an earlier boot.
    Valid { seq: u64, trusted: bool },
    /// Something that does not verify: torn, corrupt, or another format.
    Invalid(MetaError),
}

/// Everything the store needs from the record slots of one metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSlotScan {
    /// By record slot index (at least RECORD_SLOT_COUNT: larger durable pairs add theirs).
    pub states: Vec<RecordSlotState>,
    /// The durable record with the highest seq, and its record slot.
    pub winner: Option<(RecordSlot, MetaRecord)>,
    /// The durable record slot holding the newest verifying durable record (write the other next).
    pub newest_durable: Option<RecordSlot>,
    /// The trusted log entries (this boot) of both log regions with a seq above the winner's, by
    /// seq: what happened after the winner, to replay over it.
    pub log: Vec<LogEntry>,
    /// The highest seq of any verifying record or entry, trusted or not: continue after it.
    pub max_seq: Option<u64>,
}

impl RecordSlotScan {
    /// True if some record slot held bytes that do not verify.
    pub fn has_invalid(&self) -> bool {
        self.states
            .iter()
            .any(|state| matches!(state, RecordSlotState::Invalid(_)))
    }

    /// One line naming what each record slot holds, for error messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .states
            .iter()
            .enumerate()
            .map(|(record_slot, state)| match state {
                RecordSlotState::Empty => format!("record_slot {record_slot}: empty"),
                RecordSlotState::Valid { seq, trusted: true } => {
                    format!("record_slot {record_slot}: seq {seq}")
                }
                RecordSlotState::Valid {
                    seq,
                    trusted: false,
                } => format!(
                    "record_slot {record_slot}: seq {seq} from an earlier boot, not trusted"
                ),
                RecordSlotState::Invalid(why) => format!("record_slot {record_slot}: {why}"),
            })
            .collect();
        parts.join("; ")
    }
}

/// The durable record slot to write next, given the one holding the newest durable record: the other
/// slot of its pair (`Layout::durable_slot_for` moves to a larger pair when the record needs it).
pub fn next_durable_record_slot(newest_durable: Option<RecordSlot>) -> RecordSlot {
    match newest_durable.and_then(|s| Some((s, Layout::pair_of(s)?))) {
        Some((slot, pair)) => {
            let [a, b] = Layout::pair_slots(pair);
            if slot == a { b } else { a }
        }
        None => DURABLE_RECORD_SLOTS[0],
    }
}

/// Classify every record slot and pick the winner. A record slot of `None` or all-zero bytes is empty.
/// Durable record slots hold one record each, always trusted; the highest seq wins. The fast record
/// slots are log regions (`parse_log`): their entries of the current boot with a seq above the
/// winner's are returned in `log`, by seq.
pub fn scan_record_slots(
    record_slots: &[Option<Vec<u8>>],
    current_boot: &BootId,
) -> RecordSlotScan {
    let count = record_slots.len().max(RECORD_SLOT_COUNT);
    let mut scan = RecordSlotScan {
        states: vec![RecordSlotState::Empty; count],
        winner: None,
        newest_durable: None,
        log: Vec::new(),
        max_seq: None,
    };
    let durable = (0..count).filter(|s| !FAST_RECORD_SLOTS.contains(s));
    for record_slot in durable {
        let contents = record_slots.get(record_slot).and_then(Option::as_deref);
        let Some(bytes) = contents.filter(|b| b.iter().any(|&x| x != 0)) else {
            continue;
        };
        let record = match decode_record(bytes) {
            Ok(record) => record,
            Err(why) => {
                scan.states[record_slot] = RecordSlotState::Invalid(why);
                continue;
            }
        };
        scan.states[record_slot] = RecordSlotState::Valid {
            seq: record.seq,
            trusted: true,
        };
        scan.max_seq = scan.max_seq.max(Some(record.seq));
        // Lower slots come first, so on equal seq the first is kept.
        if scan
            .winner
            .as_ref()
            .is_none_or(|(_, best)| record.seq > best.seq)
        {
            scan.newest_durable = Some(record_slot);
            scan.winner = Some((record_slot, record));
        }
    }
    let after = scan.winner.as_ref().map_or(0, |(_, w)| w.seq);
    for &record_slot in &FAST_RECORD_SLOTS {
        let contents = record_slots.get(record_slot).and_then(Option::as_deref);
        let parse = parse_log(contents.unwrap_or_default(), current_boot);
        scan.max_seq = scan.max_seq.max(parse.max_seq);
        scan.states[record_slot] = parse.state;
        scan.log
            .extend(parse.entries.into_iter().filter(|e| e.record.seq > after));
    }
    scan.log.sort_by_key(|e| e.record.seq);
    scan
}

/// Pick the winner among record slot contents (None for a record slot that could not be read / is all
/// zero). Returns (record slot index, record).
#[cfg(test)]
pub fn choose_record(
    record_slots: &[Option<Vec<u8>>],
    current_boot: &BootId,
) -> Option<(RecordSlot, MetaRecord)> {
    scan_record_slots(record_slots, current_boot).winner
}

fn record_slot_range(layout: &Layout, record_slot: RecordSlot) -> Result<(u64, u64), MetaError> {
    layout
        .slot_range(record_slot)
        .ok_or(MetaError::BadRecordSlot(record_slot))
}

fn io_error(path: &Path, what: &str, err: &io::Error) -> MetaError {
    MetaError::Io(format!("{what} {}: {err}", path.display()))
}

/// The metadata file of one video: a layout header and the record slots it describes (`Layout`), or a
/// file of the first format (`Layout::LEGACY`). Created fully allocated (posix_fallocate) for its
/// first durable pair and log regions; a larger durable pair is allocated when a record first needs
/// it (on the commit thread). It holds an `Arc<File>`: cloning is cheap and the clone is Send + Sync,
/// so the sync thread can hold one while the event loop holds another (pwrite/pread at explicit
/// offsets need no shared cursor).
#[derive(Debug, Clone)]
pub struct MetaFile {
    file: Arc<File>,
    path: PathBuf,
    layout: Layout,
    /// A file that was never initialised (opened without `create`): it records nothing.
    blank: bool,
}

impl MetaFile {
    /// Open, or create for a video of `create` bytes (None → NotFound error if absent). A file that
    /// is empty or zero throughout (a crash during its creation) is initialised when `create` is
    /// given and reads as recording nothing otherwise. A file with neither a layout header nor the
    /// first format's length is InvalidData and left untouched. A created file and its directory
    /// entry are synced before this returns.
    pub fn open(path: &Path, create: Option<u64>) -> io::Result<MetaFile> {
        let file = match create {
            Some(_) => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?,
            None => OpenOptions::new().read(true).write(true).open(path)?,
        };
        let len = file.metadata()?.len();
        let mut head = vec![0u8; 64.min(len as usize)];
        file.read_exact_at(&mut head, 0)?;
        let found = match Layout::decode_header(&head) {
            Some(layout) => Some(layout),
            None if len == META_FILE_LEN && head.get(..8) != Some(&LAYOUT_MAGIC[..]) => {
                Some(Layout::LEGACY)
            }
            None => None,
        };
        let meta = |layout: Layout, blank: bool, file: File| MetaFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            layout,
            blank,
        };
        if let Some(layout) = found {
            if len < layout.initial_len() {
                // The header is synced with the allocation, before any record: complete it.
                allocate(&file, layout.initial_len())?;
                file.sync_all()?;
            }
            return Ok(meta(layout, false, file));
        }
        if !all_zero(&file, len)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "metadata file {} is {len} bytes without a vcache layout header, and not the \
                     {META_FILE_LEN} bytes of the first format; left untouched",
                    path.display()
                ),
            ));
        }
        let Some(data_len) = create else {
            return Ok(meta(Layout::for_data_len(0), true, file));
        };
        // New (or never initialised: nothing was recorded in it): header, allocation, sync.
        let layout = Layout::for_data_len(data_len);
        file.set_len(0)?;
        if let Err(e) = allocate(&file, layout.initial_len()) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        file.write_all_at(&layout.encode_header(), 0)?;
        file.sync_all()?;
        sync_parent_dir(path)?;
        Ok(meta(layout, false, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where this file's record slots are.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Bytes the file takes (its allocation).
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The bytes of one record slot as `scan_record_slots` wants them: None if the record slot is zero
    /// throughout, else the header and as much payload as the header claims (capped at
    /// the record slot).
    /// With `scan_zeros` false, a zero header means empty (read by length: nothing more is read).
    fn read_record_slot(
        &self,
        record_slot: RecordSlot,
        scan_zeros: bool,
    ) -> Result<Option<Vec<u8>>, MetaError> {
        let (offset, slot_len) = record_slot_range(&self.layout, record_slot)?;
        let read_error = |err: io::Error| {
            io_error(
                &self.path,
                &format!("read record_slot {record_slot} of"),
                &err,
            )
        };
        let mut header = vec![0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut header, offset)
            .map_err(read_error)?;
        if header.iter().all(|&byte| byte == 0) && !scan_zeros {
            return Ok(None);
        }
        if header.iter().all(|&byte| byte == 0) {
            // Empty only if the whole record slot is zero: a torn first record must not pass
            // for a fresh record slot.
            let mut chunk = vec![0u8; ZERO_SCAN_CHUNK];
            let mut at = HEADER_LEN as u64;
            while at < slot_len {
                let want = usize::try_from(slot_len - at)
                    .unwrap_or(ZERO_SCAN_CHUNK)
                    .min(ZERO_SCAN_CHUNK);
                let part = chunk.get_mut(..want).ok_or(MetaError::Truncated)?;
                self.file
                    .read_exact_at(part, offset + at)
                    .map_err(read_error)?;
                if part.iter().any(|&byte| byte != 0) {
                    // Zero header + the non-zero bytes: decodes as BadMagic, an invalid record slot.
                    let mut seen = header;
                    seen.extend_from_slice(part);
                    return Ok(Some(seen));
                }
                at += want as u64;
            }
            return Ok(None);
        }
        let claimed = field::<4>(&header, PAYLOAD_LEN_AT).map(u32::from_le_bytes)?;
        let max_payload = slot_len as usize - HEADER_LEN;
        let payload_len = usize::try_from(claimed)
            .unwrap_or(max_payload)
            .min(max_payload);
        if payload_len > 0 {
            let mut record = vec![0u8; HEADER_LEN + payload_len];
            self.file
                .read_exact_at(&mut record, offset)
                .map_err(read_error)?;
            return Ok(Some(record));
        }
        Ok(Some(header))
    }

    /// The used prefix of a log region: chunks are read until the entry headers stop (at most the
    /// region).
    fn read_log_bytes(&self, record_slot: RecordSlot) -> Result<Vec<u8>, MetaError> {
        let (offset, region_len) = record_slot_range(&self.layout, record_slot)?;
        let mut bytes: Vec<u8> = Vec::new();
        let region_len = region_len as usize;
        while bytes.len() < region_len && log_walk_end(&bytes).is_none() {
            let at = bytes.len();
            let want = LOG_READ_CHUNK.min(region_len - at);
            bytes.resize(at + want, 0);
            self.file
                .read_exact_at(&mut bytes[at..], offset + at as u64)
                .map_err(|err| {
                    io_error(
                        &self.path,
                        &format!("read log region {record_slot} of"),
                        &err,
                    )
                })?;
        }
        Ok(bytes)
    }

    /// Read every record slot and classify it (see `scan_record_slots`). Err only for I/O errors.
    /// Durable record slots are read by length: a zero header is empty without reading the rest,
    /// unless no durable record verifies — then each is checked to be zero throughout, so that a
    /// torn first record is never taken for a fresh file. Durable pairs not allocated yet are empty.
    pub fn scan(&self, boot: &BootId) -> Result<RecordSlotScan, MetaError> {
        if self.blank {
            return Ok(scan_record_slots(&[], boot));
        }
        let file_len = self.len().map_err(|e| io_error(&self.path, "stat", &e))?;
        let durable = self.layout.durable_slots_within(file_len);
        let count = durable
            .iter()
            .max()
            .map_or(0, |&s| s + 1)
            .max(RECORD_SLOT_COUNT);
        let mut record_slots: Vec<Option<Vec<u8>>> = vec![None; count];
        for &slot in &durable {
            record_slots[slot] = self.read_record_slot(slot, false)?;
        }
        let verifies = |c: &Option<Vec<u8>>| c.as_deref().is_some_and(|b| decode_record(b).is_ok());
        if !durable.iter().any(|&s| verifies(&record_slots[s])) {
            for &slot in &durable {
                record_slots[slot] = self.read_record_slot(slot, true)?;
            }
        }
        for &slot in &FAST_RECORD_SLOTS {
            record_slots[slot] = Some(self.read_log_bytes(slot)?);
        }
        Ok(scan_record_slots(&record_slots, boot))
    }

    /// Read all record slots and choose; Ok(None) for a fresh file (all zeros, or only fast
    /// records of an earlier boot: nothing was ever made durable). Err for I/O errors and
    /// for a file with non-empty record slots none of which is trusted and at least one of which
    /// does not verify (NoValidRecordSlot): never silently a fresh start.
    pub fn load(&self, boot: &BootId) -> Result<Option<(RecordSlot, MetaRecord)>, MetaError> {
        let scan = self.scan(boot)?;
        match scan.winner {
            Some(winner) => Ok(Some(winner)),
            None if scan.has_invalid() => Err(MetaError::NoValidRecordSlot(format!(
                "{}: {}",
                self.path.display(),
                scan.describe()
            ))),
            None => Ok(None),
        }
    }

    /// pwrite the whole record into the given record slot in one call (no sync); a durable pair not
    /// allocated yet is allocated first. A torn write is caught by the crc on the next load.
    pub fn write_record_slot(
        &self,
        record_slot: RecordSlot,
        rec: &MetaRecord,
    ) -> Result<(), MetaError> {
        let (offset, slot_len) = record_slot_range(&self.layout, record_slot)?;
        let bytes = encode_record(rec)?;
        if bytes.len() as u64 > slot_len {
            return Err(MetaError::TooLarge {
                payload: rec.payload.len(),
                max: slot_len as usize - HEADER_LEN,
            });
        }
        let write_error = |err: io::Error| {
            io_error(
                &self.path,
                &format!("write record_slot {record_slot} of"),
                &err,
            )
        };
        if self.len().map_err(write_error)? < offset + slot_len {
            allocate(&self.file, offset + slot_len).map_err(write_error)?;
        }
        self.file.write_all_at(&bytes, offset).map_err(write_error)
    }

    /// pwrite one log entry at `pos` in the log region `record_slot` (no sync).
    pub fn write_log_entry(
        &self,
        record_slot: RecordSlot,
        pos: u64,
        bytes: &[u8],
    ) -> Result<(), MetaError> {
        assert!(
            FAST_RECORD_SLOTS.contains(&record_slot),
            "log entry outside the log regions"
        );
        let (offset, region_len) = record_slot_range(&self.layout, record_slot)?;
        assert!(
            pos + bytes.len() as u64 <= region_len,
            "log entry past its region"
        );
        self.file.write_all_at(bytes, offset + pos).map_err(|err| {
            io_error(
                &self.path,
                &format!("write log region {record_slot} of"),
                &err,
            )
        })
    }

    /// write_record_slot then sync: a durable commit (call only after the data file is synced).
    pub fn write_record_slot_synced(
        &self,
        record_slot: RecordSlot,
        rec: &MetaRecord,
    ) -> Result<(), MetaError> {
        self.write_record_slot(record_slot, rec)?;
        self.sync()
            .map_err(|err| io_error(&self.path, "fdatasync", &err))
    }

    /// fdatasync the meta file.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Try-clone of the underlying file handle; a plain `clone()` (shared Arc) is cheaper.
    #[cfg(test)]
    pub fn try_clone(&self) -> io::Result<MetaFile> {
        Ok(MetaFile {
            file: Arc::new(self.file.try_clone()?),
            path: self.path.clone(),
            layout: self.layout,
            blank: self.blank,
        })
    }
}

/// Extend `file` to at least `len` bytes, allocated: a full disk is an error now, not an ENOSPC on a
/// later metadata write.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let want = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: posix_fallocate on a descriptor `file` keeps open, opened for writing; it returns an
    // error number instead of setting errno.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, want) };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Is the file zero throughout (read in chunks)?
fn all_zero(file: &File, len: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; ZERO_SCAN_CHUNK];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(ZERO_SCAN_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..want], at)?;
        if chunk[..want].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += want as u64;
    }
    Ok(true)
}

/// Where the failed data sync of the video whose metadata is `meta_path` is recorded:
/// `<id>.sync-failed` next to `<id>.meta`.
pub fn sync_failed_marker(meta_path: &Path) -> PathBuf {
    meta_path.with_extension("sync-failed")
}

/// Record on disk that a data sync of this video failed (the commit worker, before it reports the
/// failure): a restart then trusts only durable records, which claim only bytes synced before.
/// The marker holds the error text; it is synced with its directory entry.
pub fn mark_sync_failed(meta_path: &Path, why: &str) -> io::Result<()> {
    let marker = sync_failed_marker(meta_path);
    let mut file = File::create(&marker)?;
    io::Write::write_all(&mut file, why.as_bytes())?;
    file.sync_all()?;
    sync_parent_dir(&marker)
}

/// The error text of a recorded failed data sync, if one is recorded (`mark_sync_failed`).
pub fn read_sync_failed(meta_path: &Path) -> Option<String> {
    let marker = sync_failed_marker(meta_path);
    match std::fs::read(&marker) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(format!(
            "(the marker {} cannot be read: {e})",
            marker.display()
        )),
    }
}

/// Forget a recorded failed sync, once a durable record newer than every fast record is synced.
pub fn clear_sync_failed(meta_path: &Path) -> io::Result<()> {
    let marker = sync_failed_marker(meta_path);
    std::fs::remove_file(&marker)?;
    sync_parent_dir(&marker)
}

/// fsync the directory holding `path`, so a newly created entry survives a machine crash.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_A: BootId = [0xA; 16];
    const BOOT_B: BootId = [0xB; 16];

    fn record(seq: u64, boot_id: BootId, payload: &[u8]) -> MetaRecord {
        MetaRecord {
            seq,
            boot_id,
            video_kind: 3,
            data_len: 1 << 30,
            payload: payload.to_vec(),
        }
    }

    fn slot_bytes(rec: &MetaRecord) -> Option<Vec<u8>> {
        Some(encode_record(rec).unwrap())
    }

    fn torn(rec: &MetaRecord) -> Option<Vec<u8>> {
        let mut bytes = encode_record(rec).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        Some(bytes)
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("vcache-meta-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn crc32c_known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(
            crc32c_extend(crc32c(b"1234"), b"56789"),
            crc32c(b"123456789")
        );
    }

    #[test]
    fn parse_boot_id_accepts_uuid() {
        let id = parse_boot_id("0123abcd-4567-89ef-ABCD-0123456789ab").unwrap();
        assert_eq!(
            id,
            [
                0x01, 0x23, 0xAB, 0xCD, 0x45, 0x67, 0x89, 0xEF, 0xAB, 0xCD, 0x01, 0x23, 0x45, 0x67,
                0x89, 0xAB
            ]
        );
    }

    #[test]
    fn parse_boot_id_rejects_malformed() {
        for bad in [
            "",
            "0123abcd-4567-89ef-abcd-0123456789a",      // short
            "0123abcd-4567-89ef-abcd-0123456789abc",    // long
            "0123abcd+4567-89ef-abcd-0123456789ab",     // wrong separator
            "0123abcd-4567-89ef-abcd-0123456789ag",     // not hex
            "0123abcd4-567-89ef-abcd-0123456789ab",     // hyphen misplaced
            "0123abcd-4567-89ef-abcd-0123456789\u{e9}", // non-ascii, 36 bytes
        ] {
            assert_eq!(parse_boot_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn current_boot_id_is_stable_on_linux() {
        if Path::new(BOOT_ID_PATH).exists() {
            let first = current_boot_id().unwrap();
            assert_eq!(current_boot_id().unwrap(), first);
            assert_ne!(first, [0; 16]);
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        for payload in [&b""[..], b"x", &[7u8; 1000]] {
            let rec = record(42, BOOT_A, payload);
            let bytes = encode_record(&rec).unwrap();
            assert_eq!(bytes.len(), HEADER_LEN + payload.len());
            assert_eq!(&bytes[..8], b"VCACHEM1");
            assert_eq!(decode_record(&bytes).unwrap(), rec);
            // A record slot longer than the record: trailing bytes are ignored.
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0x55; 100]);
            assert_eq!(decode_record(&padded).unwrap(), rec);
        }
    }

    #[test]
    fn header_layout_is_as_documented() {
        let rec = MetaRecord {
            seq: 0x0102_0304_0506_0708,
            boot_id: BOOT_B,
            video_kind: 9,
            data_len: 0x1122_3344_5566_7788,
            payload: vec![1, 2, 3],
        };
        let bytes = encode_record(&rec).unwrap();
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(&bytes[12..20], &rec.seq.to_le_bytes());
        assert_eq!(&bytes[20..36], &BOOT_B);
        assert_eq!(bytes[36], 9);
        assert_eq!(&bytes[37..45], &rec.data_len.to_le_bytes());
        assert_eq!(&bytes[45..49], &3u32.to_le_bytes());
        let mut covered = bytes[..49].to_vec();
        covered.extend_from_slice(&[1, 2, 3]);
        assert_eq!(&bytes[49..53], &crc32c(&covered).to_le_bytes());
        assert_eq!(&bytes[53..], &[1, 2, 3]);
    }

    #[test]
    fn encode_size_limit() {
        let fits = record(1, BOOT_A, &vec![0; MAX_PAYLOAD_LEN]);
        let bytes = encode_record(&fits).unwrap();
        assert_eq!(bytes.len() as u64, RECORD_SLOT_SIZE);
        assert_eq!(decode_record(&bytes).unwrap(), fits);
        let too_big = record(1, BOOT_A, &vec![0; MAX_PAYLOAD_LEN + 1]);
        assert_eq!(
            encode_record(&too_big),
            Err(MetaError::TooLarge {
                payload: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            })
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_record(&record(5, BOOT_A, b"presence and more")).unwrap();
        for index in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[index] ^= 0x01;
            let result = decode_record(&corrupt);
            let expected_kind = match index {
                0..8 => matches!(result, Err(MetaError::BadMagic)),
                8..12 => matches!(result, Err(MetaError::BadVersion(_))),
                // payload_len 17 becomes 16: the checksum no longer matches.
                45 => matches!(result, Err(MetaError::BadChecksum)),
                // payload_len grows past the bytes given.
                46 | 47 => matches!(result, Err(MetaError::Truncated)),
                // payload_len grows past what a record slot can hold.
                48 => matches!(result, Err(MetaError::TooLarge { .. })),
                _ => matches!(result, Err(MetaError::BadChecksum)),
            };
            assert!(expected_kind, "byte {index}: {result:?}");
        }
    }

    #[test]
    fn malformed_slots_are_rejected() {
        let bytes = encode_record(&record(5, BOOT_A, b"payload")).unwrap();
        assert_eq!(decode_record(&[]), Err(MetaError::Truncated));
        assert_eq!(
            decode_record(&bytes[..HEADER_LEN - 1]),
            Err(MetaError::Truncated)
        );
        assert_eq!(
            decode_record(&bytes[..bytes.len() - 1]),
            Err(MetaError::Truncated)
        );
        assert_eq!(
            decode_record(&vec![0; RECORD_SLOT_SIZE as usize]),
            Err(MetaError::BadMagic)
        );
        let mut bad_magic = bytes.clone();
        bad_magic[..8].copy_from_slice(b"VCACHEM2");
        assert_eq!(decode_record(&bad_magic), Err(MetaError::BadMagic));
        let mut bad_version = bytes.clone();
        bad_version[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode_record(&bad_version), Err(MetaError::BadVersion(2)));
        // payload_len larger than a record slot can hold, even if the buffer is big enough.
        let mut huge = bytes.clone();
        huge[45..49].copy_from_slice(&u32::MAX.to_le_bytes());
        huge.resize(RECORD_SLOT_SIZE as usize * 2, 0);
        assert_eq!(
            decode_record(&huge),
            Err(MetaError::TooLarge {
                payload: u32::MAX as usize,
                max: MAX_PAYLOAD_LEN
            })
        );
        let mut just_over = bytes.clone();
        just_over[45..49].copy_from_slice(&(MAX_PAYLOAD_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode_record(&just_over),
            Err(MetaError::TooLarge { .. })
        ));
        // payload_len larger than the bytes given.
        let mut long_claim = bytes.clone();
        long_claim[45..49].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode_record(&long_claim), Err(MetaError::Truncated));
    }

    #[test]
    fn choose_fast_newer_same_boot_wins() {
        let record_slots = [
            slot_bytes(&record(4, BOOT_B, b"d0")),
            slot_bytes(&record(5, BOOT_B, b"d1")),
            slot_bytes(&record(7, BOOT_A, b"f2")),
            slot_bytes(&record(6, BOOT_A, b"f3")),
        ];
        // The winner is durable; the same-boot log entries after it are replayed, by seq.
        let (record_slot, rec) = choose_record(&record_slots, &BOOT_A).unwrap();
        assert_eq!((record_slot, rec.seq), (1, 5));
        let scan = scan_record_slots(&record_slots, &BOOT_A);
        assert_eq!(scan.newest_durable, Some(1));
        let seqs: Vec<u64> = scan.log.iter().map(|e| e.record.seq).collect();
        assert_eq!(seqs, [6, 7]);
        assert_eq!(scan.max_seq, Some(7));
        assert_eq!(next_durable_record_slot(scan.newest_durable), 0);
    }

    #[test]
    fn a_log_region_is_read_up_to_its_first_bad_entry() {
        let mut region = Vec::new();
        for (seq, payload) in [(6, &b"a"[..]), (7, b"bb"), (9, b"c")] {
            region.extend(encode_delta(&record(seq, BOOT_A, payload)).unwrap());
        }
        let whole = region.clone();
        // An entry with a lower seq (an older one left behind) ends the chain.
        region.extend(encode_delta(&record(8, BOOT_A, b"old")).unwrap());
        region.extend(encode_delta(&record(10, BOOT_A, b"after")).unwrap());
        let parse = parse_log(&region, &BOOT_A);
        let seqs: Vec<u64> = parse.entries.iter().map(|e| e.record.seq).collect();
        assert_eq!(seqs, [6, 7, 9]);
        assert!(parse.entries.iter().all(|e| e.delta));
        assert_eq!(log_walk_end(&whole), None, "the walk wants more bytes");
        // A torn entry ends it too, and so does another boot's.
        let mut torn = whole.clone();
        let last = torn.len() - 1;
        torn[last] ^= 1;
        assert_eq!(parse_log(&torn, &BOOT_A).entries.len(), 2);
        assert!(parse_log(&whole, &BOOT_B).entries.is_empty());
        let durable = slot_bytes(&record(7, BOOT_A, b"d"));
        let scan = scan_record_slots(&[durable, None, Some(whole), None], &BOOT_A);
        let seqs: Vec<u64> = scan.log.iter().map(|e| e.record.seq).collect();
        assert_eq!(
            seqs,
            [9],
            "entries the durable record covers are not replayed"
        );
        assert_eq!(scan.max_seq, Some(9));
    }

    #[test]
    fn choose_fast_newer_other_boot_falls_to_durable() {
        let record_slots = [
            slot_bytes(&record(4, BOOT_B, b"d0")),
            slot_bytes(&record(5, BOOT_B, b"d1")),
            slot_bytes(&record(7, BOOT_B, b"f2")),
            slot_bytes(&record(6, BOOT_B, b"f3")),
        ];
        let (record_slot, rec) = choose_record(&record_slots, &BOOT_A).unwrap();
        assert_eq!((record_slot, rec.seq), (1, 5));
        let scan = scan_record_slots(&record_slots, &BOOT_A);
        assert!(scan.log.is_empty());
        assert_eq!(scan.max_seq, Some(7));
        assert_eq!(
            scan.states[2],
            RecordSlotState::Valid {
                seq: 7,
                trusted: false
            }
        );
    }

    #[test]
    fn durable_slot_trusted_whatever_its_boot() {
        let record_slots = [slot_bytes(&record(1, BOOT_B, b"")), None, None, None];
        assert_eq!(choose_record(&record_slots, &BOOT_A).unwrap().0, 0);
    }

    #[test]
    fn choose_torn_newest_durable_falls_back_to_older() {
        let record_slots = [
            slot_bytes(&record(4, BOOT_A, b"old")),
            torn(&record(5, BOOT_A, b"new")),
            None,
            None,
        ];
        let (record_slot, rec) = choose_record(&record_slots, &BOOT_A).unwrap();
        assert_eq!((record_slot, rec.seq), (0, 4));
        let scan = scan_record_slots(&record_slots, &BOOT_A);
        assert_eq!(scan.newest_durable, Some(0));
        assert_eq!(next_durable_record_slot(scan.newest_durable), 1);
        assert_eq!(
            scan.states[1],
            RecordSlotState::Invalid(MetaError::BadChecksum)
        );
        assert!(scan.has_invalid());
    }

    #[test]
    fn choose_torn_fast_falls_back() {
        let record_slots = [
            slot_bytes(&record(4, BOOT_A, b"d")),
            None,
            slot_bytes(&record(6, BOOT_A, b"f2")),
            torn(&record(7, BOOT_A, b"f3")),
        ];
        let scan = scan_record_slots(&record_slots, &BOOT_A);
        assert_eq!(scan.winner.map(|(slot, _)| slot), Some(0));
        let seqs: Vec<u64> = scan.log.iter().map(|e| e.record.seq).collect();
        assert_eq!(seqs, [6], "the torn entry is not replayed");
    }

    #[test]
    fn choose_all_torn_or_empty_is_none() {
        let all_torn = [
            torn(&record(1, BOOT_A, b"a")),
            torn(&record(2, BOOT_A, b"b")),
            torn(&record(3, BOOT_A, b"c")),
            torn(&record(4, BOOT_A, b"d")),
        ];
        assert_eq!(choose_record(&all_torn, &BOOT_A), None);
        assert!(scan_record_slots(&all_torn, &BOOT_A).has_invalid());
        let empty = [None, Some(vec![0; 64]), None, Some(vec![])];
        assert_eq!(choose_record(&empty, &BOOT_A), None);
        let scan = scan_record_slots(&empty, &BOOT_A);
        assert!(!scan.has_invalid());
        assert!(
            scan.states
                .iter()
                .all(|state| *state == RecordSlotState::Empty)
        );
        assert_eq!(next_durable_record_slot(scan.newest_durable), 0);
    }

    #[test]
    fn choose_equal_seq_prefers_durable() {
        let record_slots = [
            None,
            slot_bytes(&record(9, BOOT_A, b"d")),
            slot_bytes(&record(9, BOOT_A, b"f")),
            None,
        ];
        assert_eq!(choose_record(&record_slots, &BOOT_A).unwrap().0, 1);
    }

    #[test]
    fn describe_names_every_slot() {
        let record_slots = [
            torn(&record(1, BOOT_A, b"a")),
            None,
            slot_bytes(&record(3, BOOT_B, b"")),
            slot_bytes(&record(4, BOOT_A, b"")),
        ];
        let text = scan_record_slots(&record_slots, &BOOT_A).describe();
        assert!(
            text.contains("record_slot 0: metadata checksum mismatch"),
            "{text}"
        );
        assert!(text.contains("record_slot 1: empty"), "{text}");
        assert!(
            text.contains("record_slot 2: seq 3 from an earlier boot"),
            "{text}"
        );
        assert!(text.contains("record_slot 3: seq 4"), "{text}");
    }

    /// Offset of a record slot in a file.
    fn at(meta: &MetaFile, slot: RecordSlot) -> u64 {
        meta.layout().slot_range(slot).unwrap().0
    }

    #[test]
    fn meta_file_round_trip() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("movie.meta");
        assert_eq!(
            MetaFile::open(&path, None).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let meta = MetaFile::open(&path, Some(1 << 30)).unwrap();
        let layout = Layout::for_data_len(1 << 30);
        assert_eq!(meta.layout(), layout);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            layout.initial_len()
        );
        assert_eq!(meta.load(&BOOT_A), Ok(None));

        let durable = record(1, BOOT_A, b"durable");
        meta.write_record_slot_synced(0, &durable).unwrap();
        let fast = record(2, BOOT_A, &[0x5A; 5000]);
        meta.write_record_slot(3, &fast).unwrap();
        // The durable record wins; the fast one (a log entry) comes after it.
        assert_eq!(meta.load(&BOOT_A), Ok(Some((0, durable.clone()))));
        let delta = encode_delta(&record(3, BOOT_A, b"delta")).unwrap();
        meta.write_log_entry(3, (HEADER_LEN + 5000) as u64, &delta)
            .unwrap();

        // A second handle (what the sync thread or a restarted process sees).
        drop(meta);
        let reopened = MetaFile::open(&path, None).unwrap();
        assert_eq!(reopened.layout(), layout, "the header keeps the layout");
        let scan = reopened.scan(&BOOT_A).unwrap();
        let log: Vec<(bool, u64)> = scan.log.iter().map(|e| (e.delta, e.record.seq)).collect();
        assert_eq!(log, [(false, 2), (true, 3)]);
        assert_eq!(scan.log[0].record, fast);
        // After a "reboot", the log is not trusted.
        assert!(reopened.scan(&BOOT_B).unwrap().log.is_empty());
        assert_eq!(reopened.load(&BOOT_B), Ok(Some((0, durable))));
        assert_eq!(reopened.path(), path.as_path());
        let cloned = reopened.try_clone().unwrap();
        assert_eq!(cloned.scan(&BOOT_A).unwrap().max_seq, Some(3));
        // Reopen with create (for another length) keeps the contents and the layout.
        let again = MetaFile::open(&path, Some(1 << 20)).unwrap();
        assert_eq!(again.layout(), layout);
        assert_eq!(again.scan(&BOOT_A).unwrap().max_seq, Some(3));
    }

    #[test]
    fn metadata_is_sized_to_the_video_not_to_the_largest_record() {
        // 10,000 videos of 1 MiB take 276 KiB of metadata each, not 4 MiB.
        let small = Layout::for_data_len(1 << 20);
        assert_eq!(small.initial_len(), 4096 + 2 * (8 << 10) + 2 * (128 << 10));
        assert_eq!(small.log_region_len(), 128 << 10);
        assert_eq!(Layout::for_data_len(64 << 10).log_region_len(), 16 << 10);
        assert_eq!(Layout::for_data_len(8 << 20).log_region_len(), 1 << 20);
        assert_eq!(Layout::for_data_len(1 << 30).log_region_len(), 1 << 20);
        // Pairs double from 8 KiB to 1 MiB; slots never overlap and follow each other.
        assert_eq!(small.pairs(), 8);
        let mut end = 4096;
        let mut order: Vec<RecordSlot> = vec![0, 1, 2, 3];
        order.extend((1..small.pairs()).flat_map(Layout::pair_slots));
        for slot in order {
            let (at, len) = small.slot_range(slot).unwrap();
            assert_eq!(at, end, "slot {slot}");
            end = at + len;
        }
        assert_eq!(small.slot_range(17).map(|r| r.1), Some(RECORD_SLOT_SIZE));
        assert_eq!(small.slot_range(18), None);
        // A record that fits stays in its pair; a larger one goes to the smallest pair that holds it.
        assert_eq!(small.durable_slot_for(1, 8 << 10), 1);
        assert_eq!(small.durable_slot_for(1, (8 << 10) + 1), 4);
        assert_eq!(
            small.durable_slot_for(0, 100 << 10),
            Layout::pair_slots(4)[0]
        );
        assert_eq!(
            small.durable_slot_for(5, 100),
            5,
            "never back to a smaller pair"
        );
        assert_eq!(next_durable_record_slot(Some(5)), 4);
        assert_eq!(next_durable_record_slot(Some(16)), 17);
        // The first format: one pair of 1 MiB at the start, no header.
        assert_eq!(Layout::LEGACY.pairs(), 1);
        assert_eq!(Layout::LEGACY.initial_len(), META_FILE_LEN);
        assert_eq!(Layout::LEGACY.slot_range(3), Some((3 << 20, 1 << 20)));
        assert_eq!(Layout::LEGACY.durable_slot_for(0, 1 << 20), 0);
    }

    #[test]
    fn a_record_that_outgrows_its_pair_moves_to_a_larger_one_and_a_torn_move_falls_back() {
        let dir = TempDir::new("grow");
        let path = dir.0.join("v.meta");
        let meta = MetaFile::open(&path, Some(1 << 20)).unwrap();
        let first_len = meta.len().unwrap();
        let small = record(1, BOOT_A, &[1; 100]);
        meta.write_record_slot_synced(0, &small).unwrap();
        let big = record(2, BOOT_A, &[2; 20_000]);
        let slot = meta
            .layout()
            .durable_slot_for(next_durable_record_slot(Some(0)), HEADER_LEN + 20_000);
        assert_eq!(slot, Layout::pair_slots(2)[0], "32 KiB slots hold it");
        assert!(matches!(
            meta.write_record_slot(1, &big),
            Err(MetaError::TooLarge { .. })
        ));
        // Torn while moving: the record in the first pair still wins.
        let bytes = encode_record(&big).unwrap();
        allocate(&meta.file, at(&meta, slot) + (32 << 10)).unwrap();
        meta.file
            .write_all_at(&bytes[..bytes.len() / 2], at(&meta, slot))
            .unwrap();
        let scan = meta.scan(&BOOT_A).unwrap();
        assert_eq!(scan.winner, Some((0, small)));
        assert!(matches!(scan.states[slot], RecordSlotState::Invalid(_)));
        // Whole, it wins, and the file grew up to the slot written only.
        meta.write_record_slot_synced(slot, &big).unwrap();
        let reopened = MetaFile::open(&path, None).unwrap();
        assert_eq!(reopened.load(&BOOT_A), Ok(Some((slot, big))));
        assert_eq!(
            reopened.len().unwrap(),
            first_len + 2 * (16 << 10) + (32 << 10)
        );
        let next = next_durable_record_slot(reopened.scan(&BOOT_A).unwrap().newest_durable);
        assert_eq!(next, slot + 1);
        reopened
            .write_record_slot_synced(next, &record(3, BOOT_A, &[3; 30_000]))
            .unwrap();
        assert_eq!(
            reopened.load(&BOOT_A).unwrap().map(|(s, r)| (s, r.seq)),
            Some((next, 3))
        );
    }

    #[test]
    fn a_file_of_the_first_format_opens_as_it_was_written() {
        let dir = TempDir::new("legacy");
        let path = dir.0.join("v.meta");
        // What the first format wrote: 4 MiB, a durable record at 1 MiB, a log entry at 2 MiB.
        let durable = encode_record(&record(4, BOOT_A, b"old durable")).unwrap();
        let delta = encode_delta(&record(5, BOOT_A, b"old delta")).unwrap();
        let mut image = vec![0u8; META_FILE_LEN as usize];
        image[1 << 20..(1 << 20) + durable.len()].copy_from_slice(&durable);
        image[2 << 20..(2 << 20) + delta.len()].copy_from_slice(&delta);
        std::fs::write(&path, &image).unwrap();
        let meta = MetaFile::open(&path, Some(1 << 20)).unwrap();
        assert_eq!(meta.layout(), Layout::LEGACY);
        let scan = meta.scan(&BOOT_A).unwrap();
        assert_eq!(scan.winner.map(|(s, r)| (s, r.seq)), Some((1, 4)));
        assert_eq!(scan.log.len(), 1);
        // It keeps its layout: the next durable record goes to slot 0, the log to 1 MiB regions.
        assert_eq!(next_durable_record_slot(scan.newest_durable), 0);
        meta.write_record_slot_synced(0, &record(6, BOOT_A, &[7; 500_000]))
            .unwrap();
        assert_eq!(meta.len().unwrap(), META_FILE_LEN);
        assert_eq!(
            meta.load(&BOOT_A).unwrap().map(|(s, r)| (s, r.seq)),
            Some((0, 6))
        );
        assert_eq!(std::fs::read(&path).unwrap()[..8], MAGIC);
    }

    #[test]
    fn meta_file_bad_slot_and_too_large() {
        let dir = TempDir::new("bad-record_slot");
        let meta = MetaFile::open(&dir.0.join("v.meta"), Some(1 << 30)).unwrap();
        assert_eq!(
            meta.write_record_slot(18, &record(1, BOOT_A, b"")),
            Err(MetaError::BadRecordSlot(18))
        );
        assert!(matches!(
            meta.write_record_slot(17, &record(1, BOOT_A, &vec![0; MAX_PAYLOAD_LEN + 1])),
            Err(MetaError::TooLarge { .. })
        ));
        assert_eq!(meta.load(&BOOT_A), Ok(None));
        // The largest record fits the largest slot exactly and does not spill into the next one.
        let full = record(1, BOOT_A, &vec![0xEE; MAX_PAYLOAD_LEN]);
        meta.write_record_slot(16, &full).unwrap();
        meta.write_record_slot(17, &record(2, BOOT_A, b"next"))
            .unwrap();
        assert_eq!(
            meta.scan(&BOOT_A).unwrap().states[16],
            RecordSlotState::Valid {
                seq: 1,
                trusted: true
            }
        );
    }

    #[test]
    fn meta_file_torn_write_falls_back_to_other_slot() {
        let dir = TempDir::new("torn");
        let path = dir.0.join("v.meta");
        let meta = MetaFile::open(&path, Some(1 << 30)).unwrap();
        let older = record(1, BOOT_A, &[0x11; 3000]);
        let newer = record(2, BOOT_A, &[0x22; 3000]);
        meta.write_record_slot(0, &older).unwrap();
        meta.write_record_slot(1, &newer).unwrap();
        assert_eq!(meta.load(&BOOT_A).unwrap().unwrap().1, newer);
        // Half of a seq-3 record lands over the older record slot 0: 0 is torn, 1 still wins.
        let newest = encode_record(&record(3, BOOT_A, &[0x33; 3000])).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&newest[..newest.len() / 2], at(&meta, 0))
            .unwrap();
        let scan = meta.scan(&BOOT_A).unwrap();
        assert_eq!(
            scan.states[0],
            RecordSlotState::Invalid(MetaError::BadChecksum)
        );
        assert_eq!(meta.load(&BOOT_A), Ok(Some((1, newer))));
        // The same tear over record slot 1 too: nothing verifies, which is an error, not fresh.
        file.write_all_at(&newest[..newest.len() / 2], at(&meta, 1))
            .unwrap();
        let err = meta.load(&BOOT_A).unwrap_err();
        assert!(matches!(err, MetaError::NoValidRecordSlot(_)), "{err:?}");
        assert!(err.to_string().contains("v.meta"), "{err}");
    }

    #[test]
    fn meta_file_torn_first_record_is_not_fresh() {
        let dir = TempDir::new("torn-first");
        let path = dir.0.join("v.meta");
        let meta = MetaFile::open(&path, Some(1 << 30)).unwrap();
        // Only the second half of a record reached the disk: header is zero, payload not.
        let bytes = encode_record(&record(1, BOOT_A, &[0x44; 8000])).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&bytes[4096..], at(&meta, 0) + 4096)
            .unwrap();
        assert!(matches!(
            meta.load(&BOOT_A),
            Err(MetaError::NoValidRecordSlot(_))
        ));
        // A stray non-zero byte at the very end of a record slot is noticed too.
        let meta2_path = dir.0.join("w.meta");
        let meta2 = MetaFile::open(&meta2_path, Some(1 << 30)).unwrap();
        let file2 = OpenOptions::new().write(true).open(&meta2_path).unwrap();
        file2.write_all_at(&[1], at(&meta2, 2) - 1).unwrap();
        assert!(matches!(
            meta2.load(&BOOT_A),
            Err(MetaError::NoValidRecordSlot(_))
        ));
    }

    #[test]
    fn meta_file_only_old_boot_fast_records_is_fresh() {
        let dir = TempDir::new("old-boot");
        let meta = MetaFile::open(&dir.0.join("v.meta"), Some(1 << 30)).unwrap();
        meta.write_record_slot(2, &record(1, BOOT_B, b"unsynced"))
            .unwrap();
        assert_eq!(meta.load(&BOOT_A), Ok(None));
        assert_eq!(meta.scan(&BOOT_A).unwrap().max_seq, Some(1));
    }

    #[test]
    fn meta_file_wrong_length_is_refused_and_untouched() {
        let dir = TempDir::new("wrong-len");
        let path = dir.0.join("v.meta");
        std::fs::write(&path, b"not a meta file").unwrap();
        let err = MetaFile::open(&path, Some(1 << 30)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a meta file");
        // A header that does not verify is refused too.
        let bad = dir.0.join("b.meta");
        let mut header = Layout::for_data_len(1 << 20).encode_header();
        header[20] ^= 1;
        header.resize(60_000, 0);
        std::fs::write(&bad, &header).unwrap();
        assert!(MetaFile::open(&bad, Some(1 << 20)).is_err());
        assert_eq!(std::fs::read(&bad).unwrap(), header);
        // A zero-length or all-zero file (a crash during creation) records nothing; with `create` it
        // is initialised.
        let empty = dir.0.join("e.meta");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            MetaFile::open(&empty, None).unwrap().load(&BOOT_A),
            Ok(None)
        );
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
        std::fs::write(&empty, vec![0u8; 12_345]).unwrap();
        let meta = MetaFile::open(&empty, Some(1 << 20)).unwrap();
        let len = Layout::for_data_len(1 << 20).initial_len();
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), len);
        assert_eq!(meta.load(&BOOT_A), Ok(None));
    }

    #[test]
    fn meta_file_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MetaFile>();
    }
}
