//! MPEG-TS keyframe scanner behind `vcache index FILE` (`index_cmd`) and the live channels' seek
//! index: a pure parser, fed bytes in any pieces. It follows the PAT and PMT to the video PID and
//! reports every TS packet that starts a keyframe PES (random access indicator, an H.264 IDR / HEVC
//! IRAP slice, or an MPEG-1/2 sequence header with an I-picture) with its PTS.

/// Size of one transport stream packet.
pub const TS_PACKET_SIZE: usize = 188;
/// First byte of every transport stream packet.
pub const TS_SYNC_BYTE: u8 = 0x47;
/// Bytes needed to confirm a sync candidate: a sync byte here and one a packet later.
const SYNC_CONFIRM_BYTES: usize = TS_PACKET_SIZE + 1;
/// The PID that carries the program association table.
const PAT_PID: u16 = 0x0000;
/// The PID that carries the service description table (DVB), which muxers such as ffmpeg write
/// beside the PAT and PMT.
const SDT_PID: u16 = 0x0011;
/// Table packets (PAT, PMT, SDT, and null packets among them) in a row that a frame start reaches
/// back over, at most: a muxer writes one of each before a keyframe; of a longer run the frame keeps
/// the last packets.
pub const MAX_TABLE_RUN_PACKETS: u64 = 8;
/// Null packets (stuffing of a constant-rate mux) may sit between the tables and the frame.
const NULL_PID: u16 = 0x1FFF;
/// Largest PAT or PMT section (section_length is at most 1021, plus the 3-byte section head).
pub const MAX_PSI_SECTION_BYTES: usize = 1024;
/// table_id and section_length, ahead of every PSI section.
const SECTION_HEAD_BYTES: usize = 3;
/// The shortest long-form section: head, 5 bytes of table id extension to last_section_number,
/// and the CRC.
const MIN_LONG_SECTION_BYTES: usize = SECTION_HEAD_BYTES + 5 + 4;
/// Programs followed from the PAT, at most; further ones are ignored.
pub const MAX_PROGRAMS: usize = 64;
/// Bytes of a video PES kept to find its PES header and first slice NAL. x264 puts a ~700-byte
/// SEI and the parameter sets before the IDR slice; a PES whose first slice lies further is not
/// indexed unless it carries the random access indicator.
pub const MAX_PES_PROBE_BYTES: usize = 16 * 1024;
/// PTS and DTS count modulo 2^33.
pub const PTS_MODULUS: u64 = 1 << 33;
/// PTS and DTS tick at 90 kHz.
pub const PTS_CLOCK_HZ: u64 = 90_000;
/// Video PES timestamps sampled for frame-rate detection (`TsIndexer::sampling_pts`), at most.
pub const MAX_FPS_SAMPLES: usize = 1024;

/// A TS packet that starts a keyframe PES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyframe {
    /// Byte offset where a player should start to decode from this keyframe: the TS packet that
    /// starts the keyframe PES or, when the packets right before it carry the PAT, PMT or SDT (as
    /// muxers write them ahead of every keyframe), the first of those table packets, so that a
    /// segment or join starting here begins with the tables a demuxer needs (RFC 8216 3.2).
    pub offset: u64,
    /// Presentation timestamp of the keyframe, 90 kHz, modulo 2^33.
    pub pts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    Mpeg1,
    Mpeg2,
    Mpeg4Part2,
    H264,
    Hevc,
}

impl VideoCodec {
    fn from_stream_type(stream_type: u8) -> Option<VideoCodec> {
        match stream_type {
            0x01 => Some(VideoCodec::Mpeg1),
            0x02 => Some(VideoCodec::Mpeg2),
            0x10 => Some(VideoCodec::Mpeg4Part2),
            0x1B => Some(VideoCodec::H264),
            0x24 => Some(VideoCodec::Hevc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VideoStream {
    pid: u16,
    codec: VideoCodec,
    /// The PMT that announced this stream; only that PMT may change or remove it.
    pmt_pid: u16,
}

/// The fields of one TS packet that the scanner uses.
struct TsPacket<'a> {
    pid: u16,
    payload_unit_start: bool,
    random_access: bool,
    discontinuity: bool,
    continuity_counter: u8,
    payload: Option<&'a [u8]>,
}

/// Parses one 188-byte packet; None for packets to skip: transport error indicator set,
/// reserved adaptation_field_control, an adaptation field that does not fit, or a scrambled
/// payload.
fn parse_packet(packet: &[u8]) -> Option<TsPacket<'_>> {
    let header: &[u8; 4] = packet.get(..4)?.try_into().ok()?;
    if header[0] != TS_SYNC_BYTE || packet.len() != TS_PACKET_SIZE {
        return None;
    }
    let transport_error = header[1] & 0x80 != 0;
    if transport_error {
        return None;
    }
    let payload_unit_start = header[1] & 0x40 != 0;
    let pid = (u16::from(header[1] & 0x1F) << 8) | u16::from(header[2]);
    let scrambling = header[3] >> 6;
    let adaptation_field_control = (header[3] >> 4) & 0x03;
    let continuity_counter = header[3] & 0x0F;
    let has_adaptation = adaptation_field_control & 0x02 != 0;
    let has_payload = adaptation_field_control & 0x01 != 0;
    if adaptation_field_control == 0 {
        return None;
    }
    let mut payload_start = 4;
    let mut random_access = false;
    let mut discontinuity = false;
    if has_adaptation {
        let length = usize::from(*packet.get(4)?);
        // ISO 13818-1: 183 without payload, at most 182 with one.
        let max_length = if has_payload { 182 } else { 183 };
        if length > max_length {
            return None;
        }
        if length > 0 {
            let flags = *packet.get(5)?;
            discontinuity = flags & 0x80 != 0;
            random_access = flags & 0x40 != 0;
        }
        payload_start = 5 + length;
    }
    let payload = if has_payload {
        if scrambling != 0 {
            return None;
        }
        Some(packet.get(payload_start..)?)
    } else {
        None
    };
    Some(TsPacket {
        pid,
        payload_unit_start,
        random_access,
        discontinuity,
        continuity_counter,
        payload,
    })
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, initial 0xFFFFFFFF, no final xor).
/// Over a whole PSI section including its CRC field, it is 0 when the section is intact.
pub fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Reassembles PSI sections of one PID from packet payloads.
struct SectionAssembler {
    pid: u16,
    section: Vec<u8>,
    /// A section has started and is not complete yet.
    active: bool,
}

impl SectionAssembler {
    fn new(pid: u16) -> Self {
        SectionAssembler {
            pid,
            section: Vec::new(),
            active: false,
        }
    }

    fn push(&mut self, payload_unit_start: bool, payload: &[u8], done: &mut Vec<Vec<u8>>) {
        if !payload_unit_start {
            if self.active {
                self.extend(payload, done);
            }
            return;
        }
        let Some((&pointer, rest)) = payload.split_first() else {
            self.active = false;
            return;
        };
        let pointer = usize::from(pointer);
        let (Some(previous_tail), Some(mut next)) = (rest.get(..pointer), rest.get(pointer..))
        else {
            // The pointer field points past the packet: corrupt.
            self.active = false;
            return;
        };
        if self.active {
            self.extend(previous_tail, done);
        }
        // Sections follow one another until stuffing (0xFF) or the end of the packet.
        while next.first().is_some_and(|&table_id| table_id != 0xFF) {
            self.section.clear();
            self.active = true;
            let used = self.extend(next, done);
            if self.active {
                break;
            }
            next = next.get(used..).unwrap_or(&[]);
        }
    }

    /// Appends what the current section still needs from `bytes`; returns how many bytes it took.
    /// A section that is too short or too long is dropped with the rest of `bytes`.
    fn extend(&mut self, bytes: &[u8], done: &mut Vec<Vec<u8>>) -> usize {
        let mut used = 0;
        while self.active && used < bytes.len() {
            let wanted = if let Some(&[_, length_high, length_low]) =
                self.section.get(..SECTION_HEAD_BYTES)
            {
                let section_length =
                    (usize::from(length_high & 0x0F) << 8) | usize::from(length_low);
                let total = SECTION_HEAD_BYTES + section_length;
                if !(MIN_LONG_SECTION_BYTES..=MAX_PSI_SECTION_BYTES).contains(&total) {
                    self.active = false;
                    return bytes.len();
                }
                total
            } else {
                SECTION_HEAD_BYTES
            };
            let take = (wanted - self.section.len()).min(bytes.len() - used);
            self.section.extend_from_slice(&bytes[used..used + take]);
            used += take;
            if self.section.len() == wanted && wanted >= MIN_LONG_SECTION_BYTES {
                done.push(std::mem::take(&mut self.section));
                self.active = false;
            }
        }
        used
    }
}

/// What the PES header at the start of a probe says so far.
enum PesHeader {
    Incomplete,
    Invalid,
    Parsed { pts: Option<u64>, es_start: usize },
}

/// Does this stream_id carry the optional PES header (with PTS)? ISO 13818-1 table 2-21.
fn has_optional_pes_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    )
}

fn parse_pes_header(bytes: &[u8]) -> PesHeader {
    const START_CODE_PREFIX: [u8; 3] = [0x00, 0x00, 0x01];
    let prefix_len = bytes.len().min(3);
    if bytes.get(..prefix_len) != START_CODE_PREFIX.get(..prefix_len) {
        return PesHeader::Invalid;
    }
    let Some(&[_, _, _, stream_id, _, _, marker, flags, header_data_length]) = bytes.get(..9)
    else {
        return PesHeader::Incomplete;
    };
    if !has_optional_pes_header(stream_id) || marker & 0xC0 != 0x80 {
        return PesHeader::Invalid;
    }
    let es_start = 9 + usize::from(header_data_length);
    if bytes.len() < es_start {
        return PesHeader::Incomplete;
    }
    let has_pts = flags & 0x80 != 0;
    let pts = if has_pts && header_data_length >= 5 {
        bytes.get(9..14).and_then(parse_timestamp)
    } else {
        None
    };
    PesHeader::Parsed { pts, es_start }
}

/// Decodes a 5-byte PES timestamp. Marker bits are not checked (as ffmpeg does not).
fn parse_timestamp(bytes: &[u8]) -> Option<u64> {
    let &[b0, b1, b2, b3, b4] = bytes else {
        return None;
    };
    Some(
        (u64::from((b0 >> 1) & 0x07) << 30)
            | (u64::from(b1) << 22)
            | (u64::from(b2 >> 1) << 15)
            | (u64::from(b3) << 7)
            | u64::from(b4 >> 1),
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keyframe,
    NotKeyframe,
    NeedMore,
}

/// Looks at the start codes at the start of an access unit until the first picture or slice
/// tells whether it is a keyframe: an H.264 IDR or HEVC IRAP slice, or an MPEG-1/2 I-picture
/// preceded by a sequence header (MPEG-4 part 2 relies on the random access indicator alone).
fn classify_access_unit(elementary: &[u8], codec: VideoCodec) -> Verdict {
    const MPEG2_PICTURE_START: u8 = 0x00;
    const MPEG2_LAST_SLICE_START: u8 = 0xAF;
    const MPEG2_SEQUENCE_HEADER: u8 = 0xB3;
    const MPEG2_I_PICTURE: u8 = 1;
    let mut mpeg2_sequence_header_seen = false;
    let mut position = 0;
    while let Some(window) = elementary.get(position..position + 3) {
        if window != [0x00, 0x00, 0x01] {
            position += 1;
            continue;
        }
        let Some(&nal_header) = elementary.get(position + 3) else {
            return Verdict::NeedMore;
        };
        let verdict = match codec {
            VideoCodec::H264 => match nal_header & 0x1F {
                5 => Verdict::Keyframe,
                1..=4 => Verdict::NotKeyframe,
                _ => Verdict::NeedMore,
            },
            VideoCodec::Hevc => match (nal_header >> 1) & 0x3F {
                16..=23 => Verdict::Keyframe,
                0..=15 => Verdict::NotKeyframe,
                _ => Verdict::NeedMore,
            },
            VideoCodec::Mpeg1 | VideoCodec::Mpeg2 => match nal_header {
                MPEG2_PICTURE_START => {
                    // temporal_reference (10 bits), then picture_coding_type (3 bits).
                    let Some(&coding) = elementary.get(position + 5) else {
                        return Verdict::NeedMore;
                    };
                    if mpeg2_sequence_header_seen && (coding >> 3) & 0x07 == MPEG2_I_PICTURE {
                        Verdict::Keyframe
                    } else {
                        Verdict::NotKeyframe
                    }
                }
                0x01..=MPEG2_LAST_SLICE_START => Verdict::NotKeyframe,
                MPEG2_SEQUENCE_HEADER => {
                    mpeg2_sequence_header_seen = true;
                    Verdict::NeedMore
                }
                _ => Verdict::NeedMore,
            },
            VideoCodec::Mpeg4Part2 => Verdict::NotKeyframe,
        };
        if verdict != Verdict::NeedMore {
            return verdict;
        }
        position += 4;
    }
    Verdict::NeedMore
}

/// The start of a video PES, kept until it is known whether it starts a keyframe.
struct PesProbe {
    offset: u64,
    random_access: bool,
    bytes: Vec<u8>,
    /// PTS and where the elementary stream starts, once the PES header is complete.
    header: Option<(Option<u64>, usize)>,
}

/// Incremental scanner: feed bytes in any split. It tracks the PAT and PMT to find the video
/// PID (stream types 0x01, 0x02, 0x10, 0x1B, 0x24) and reports a keyframe for each TS packet on
/// that PID that starts a PES (payload_unit_start_indicator) and either has the adaptation
/// field's random_access_indicator or starts its payload with an H.264 IDR / HEVC IRAP slice
/// or an MPEG-1/2 sequence header and I-picture; the PTS comes from the PES header. On a packet that does not start with 0x47 it
/// resynchronises at the next sync byte confirmed by another one a packet later. Memory is
/// bounded: under a packet of carried bytes, the PSI sections, and one PES probe.
pub struct TsIndexer {
    base_offset: u64,
    /// Stream position (from base_offset) of the first byte not yet consumed.
    stream_position: u64,
    /// Bytes of an incomplete packet or unconfirmed sync candidate; fewer than SYNC_CONFIRM_BYTES.
    carry: Vec<u8>,
    synced: bool,
    packets: u64,
    pmt_pids: Vec<u16>,
    sections: Vec<SectionAssembler>,
    video: Option<VideoStream>,
    video_continuity: Option<u8>,
    probe: Option<PesProbe>,
    /// PTS of video PES headers, collected for `detect_fps` when Some.
    pts_samples: Option<Vec<u64>>,
    /// Every video PES start with a PTS since the last `take_frame_starts`, when Some (LL-HLS parts).
    frame_starts: Option<Vec<Keyframe>>,
    /// Offset of the first of the table packets (PAT, PMT, SDT) seen in a row right before the
    /// current packet, and how many there were.
    table_run: Option<(u64, u64)>,
}

enum SyncSearch {
    /// A confirmed sync byte at this position.
    Found(usize),
    /// None confirmed yet; the bytes before this position can be dropped.
    NeedMore(usize),
}

fn find_sync(bytes: &[u8], at_end: bool) -> SyncSearch {
    for (position, &byte) in bytes.iter().enumerate() {
        if byte != TS_SYNC_BYTE {
            continue;
        }
        match bytes.get(position + TS_PACKET_SIZE) {
            Some(&TS_SYNC_BYTE) => return SyncSearch::Found(position),
            Some(_) => continue,
            None if at_end && bytes.len() - position >= TS_PACKET_SIZE => {
                return SyncSearch::Found(position);
            }
            None => return SyncSearch::NeedMore(position),
        }
    }
    SyncSearch::NeedMore(bytes.len())
}

impl TsIndexer {
    /// A scanner whose first fed byte is at `base_offset`.
    pub fn new(base_offset: u64) -> Self {
        TsIndexer {
            base_offset,
            stream_position: 0,
            carry: Vec::with_capacity(2 * SYNC_CONFIRM_BYTES),
            synced: false,
            packets: 0,
            pmt_pids: Vec::new(),
            sections: Vec::new(),
            video: None,
            video_continuity: None,
            probe: None,
            pts_samples: None,
            frame_starts: None,
            table_run: None,
        }
    }

    /// An indexer that also reports where every video frame (PES with a PTS) starts
    /// (`take_frame_starts`), keyframe or not.
    pub fn tracking_frames(base_offset: u64) -> Self {
        TsIndexer {
            frame_starts: Some(Vec::new()),
            ..TsIndexer::new(base_offset)
        }
    }

    /// The video frame starts found since the last call, in offset order (empty unless made by
    /// `tracking_frames`).
    pub fn take_frame_starts(&mut self) -> Vec<Keyframe> {
        self.frame_starts
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Scans the next bytes of the stream; returns the keyframes completed by them, with
    /// offsets `base_offset` + position in the stream. A keyframe is reported once its PES header
    /// (and for H.264/HEVC without the random access indicator, its first slice NAL) has arrived.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Keyframe> {
        let mut keyframes = Vec::new();
        let mut input = bytes;
        if !self.carry.is_empty() {
            let carried = self.carry.len();
            let top_up = input.len().min(SYNC_CONFIRM_BYTES);
            self.carry.extend_from_slice(&input[..top_up]);
            let carry = std::mem::take(&mut self.carry);
            let used = self.process(&carry, false, &mut keyframes);
            if used < carried {
                // Whatever is left is shorter than SYNC_CONFIRM_BYTES, so it holds all of `input`.
                self.carry = carry;
                self.carry.drain(..used);
                debug_assert!(self.carry.len() < SYNC_CONFIRM_BYTES);
                return keyframes;
            }
            input = &input[used - carried..];
            self.carry = carry;
            self.carry.clear();
        }
        let used = self.process(input, false, &mut keyframes);
        self.carry.extend_from_slice(&input[used..]);
        debug_assert!(self.carry.len() < SYNC_CONFIRM_BYTES);
        keyframes
    }

    /// Ends the stream: scans a last packet whose sync could not be confirmed by a following
    /// one, and decides a PES still waiting for its first slice (with what has arrived).
    pub fn finish(&mut self) -> Vec<Keyframe> {
        let mut keyframes = Vec::new();
        let carry = std::mem::take(&mut self.carry);
        let used = self.process(&carry, true, &mut keyframes);
        self.carry = carry;
        self.carry.drain(..used);
        self.probe = None;
        keyframes
    }

    /// The video PID found through the PAT and PMT, if any.
    pub fn video_pid(&self) -> Option<u16> {
        self.video.map(|video| video.pid)
    }

    /// An indexer that also keeps the PTS of the first `MAX_FPS_SAMPLES` video PES headers, for
    /// frame-rate detection.
    pub fn sampling_pts(base_offset: u64) -> Self {
        TsIndexer {
            pts_samples: Some(Vec::new()),
            ..TsIndexer::new(base_offset)
        }
    }

    /// The PTS sampled so far (empty unless made by `sampling_pts`).
    pub fn pts_samples(&self) -> &[u64] {
        self.pts_samples.as_deref().unwrap_or(&[])
    }

    /// TS packets scanned so far (after sync).
    pub fn packets_scanned(&self) -> u64 {
        self.packets
    }

    /// Scans whole packets of `buffer` (which starts at `self.stream_position`); returns the
    /// bytes consumed. It stops only with fewer than SYNC_CONFIRM_BYTES bytes left.
    fn process(&mut self, buffer: &[u8], at_end: bool, keyframes: &mut Vec<Keyframe>) -> usize {
        let mut position = 0;
        loop {
            let rest = buffer.get(position..).unwrap_or(&[]);
            if self.synced {
                let Some(packet) = rest.get(..TS_PACKET_SIZE) else {
                    break;
                };
                if packet.first() == Some(&TS_SYNC_BYTE) {
                    let offset = self
                        .base_offset
                        .saturating_add(self.stream_position)
                        .saturating_add(position as u64);
                    self.handle_packet(packet, offset, keyframes);
                    position += TS_PACKET_SIZE;
                    continue;
                }
                self.lose_sync();
            }
            match find_sync(rest, at_end) {
                SyncSearch::Found(skip) => {
                    position += skip;
                    self.synced = true;
                }
                SyncSearch::NeedMore(skip) => {
                    position += skip;
                    break;
                }
            }
        }
        self.stream_position = self.stream_position.saturating_add(position as u64);
        position
    }

    fn lose_sync(&mut self) {
        self.synced = false;
        self.probe = None;
        self.table_run = None;
        self.video_continuity = None;
        for assembler in &mut self.sections {
            assembler.active = false;
        }
    }

    fn handle_packet(&mut self, bytes: &[u8], offset: u64, keyframes: &mut Vec<Keyframe>) {
        self.packets += 1;
        let tables_before = self.table_run.take();
        let Some(packet) = parse_packet(bytes) else {
            return;
        };
        let is_psi = packet.pid == PAT_PID || self.pmt_pids.contains(&packet.pid);
        let in_run =
            is_psi || packet.pid == SDT_PID || (packet.pid == NULL_PID && tables_before.is_some());
        if in_run {
            // The packets of a run are contiguous: past the limit it slides to keep the last ones.
            self.table_run = Some(match tables_before {
                Some((start, count)) if count < MAX_TABLE_RUN_PACKETS => (start, count + 1),
                Some((start, count)) => (start + TS_PACKET_SIZE as u64, count),
                None => (offset, 1),
            });
        }
        if is_psi {
            self.handle_psi_packet(&packet);
        } else if self.video.is_some_and(|video| video.pid == packet.pid) {
            let start = tables_before.map_or(offset, |(start, _)| start);
            self.handle_video_packet(&packet, start, keyframes);
        }
    }

    fn handle_psi_packet(&mut self, packet: &TsPacket<'_>) {
        let Some(payload) = packet.payload else {
            return;
        };
        let index = match self.sections.iter().position(|a| a.pid == packet.pid) {
            Some(index) => index,
            None => {
                self.sections.push(SectionAssembler::new(packet.pid));
                self.sections.len() - 1
            }
        };
        let mut done = Vec::new();
        if let Some(assembler) = self.sections.get_mut(index) {
            assembler.push(packet.payload_unit_start, payload, &mut done);
        }
        for section in done {
            self.handle_section(packet.pid, &section);
        }
    }

    fn handle_section(&mut self, pid: u16, section: &[u8]) {
        const PAT_TABLE_ID: u8 = 0x00;
        const PMT_TABLE_ID: u8 = 0x02;
        const LONG_HEADER_BYTES: usize = 8;
        const CRC_BYTES: usize = 4;
        let Some(&[table_id, syntax, _, _, _, version, section_number, _]) =
            section.get(..LONG_HEADER_BYTES)
        else {
            return;
        };
        let section_syntax_indicator = syntax & 0x80 != 0;
        let current_next_indicator = version & 0x01 != 0;
        if !section_syntax_indicator
            || !current_next_indicator
            || section.len() < LONG_HEADER_BYTES + CRC_BYTES
            || crc32_mpeg2(section) != 0
        {
            return;
        }
        let body = &section[LONG_HEADER_BYTES..section.len() - CRC_BYTES];
        if pid == PAT_PID && table_id == PAT_TABLE_ID {
            self.handle_pat(section_number, body);
        } else if pid != PAT_PID && table_id == PMT_TABLE_ID {
            self.handle_pmt(pid, body);
        }
    }

    fn handle_pat(&mut self, section_number: u8, body: &[u8]) {
        let mut pmt_pids = if section_number == 0 {
            Vec::new()
        } else {
            self.pmt_pids.clone()
        };
        for entry in body.chunks_exact(4) {
            let program_number = u16::from_be_bytes([entry[0], entry[1]]);
            let pid = u16::from_be_bytes([entry[2] & 0x1F, entry[3]]);
            // Program 0 names the network information PID, not a PMT.
            if program_number != 0
                && pid != PAT_PID
                && !pmt_pids.contains(&pid)
                && pmt_pids.len() < MAX_PROGRAMS
            {
                pmt_pids.push(pid);
            }
        }
        if pmt_pids == self.pmt_pids {
            return;
        }
        self.pmt_pids = pmt_pids;
        let pmt_pids = &self.pmt_pids;
        self.sections
            .retain(|a| a.pid == PAT_PID || pmt_pids.contains(&a.pid));
        if self
            .video
            .is_some_and(|video| !self.pmt_pids.contains(&video.pmt_pid))
        {
            self.set_video(None);
        }
    }

    fn handle_pmt(&mut self, pmt_pid: u16, body: &[u8]) {
        let Some(&[_, _, info_high, info_low]) = body.get(..4) else {
            return;
        };
        let program_info_length = (usize::from(info_high & 0x0F) << 8) | usize::from(info_low);
        let mut streams = body.get(4 + program_info_length..).unwrap_or(&[]);
        let mut found = None;
        while let Some(&[stream_type, pid_high, pid_low, es_high, es_low]) = streams.get(..5) {
            let es_info_length = (usize::from(es_high & 0x0F) << 8) | usize::from(es_low);
            if let Some(codec) = VideoCodec::from_stream_type(stream_type) {
                found = Some(VideoStream {
                    pid: u16::from_be_bytes([pid_high & 0x1F, pid_low]),
                    codec,
                    pmt_pid,
                });
                break;
            }
            streams = streams.get(5 + es_info_length..).unwrap_or(&[]);
        }
        match self.video {
            None => self.set_video(found),
            Some(video) if video.pmt_pid == pmt_pid && Some(video) != found => {
                self.set_video(found)
            }
            Some(_) => {}
        }
    }

    fn set_video(&mut self, video: Option<VideoStream>) {
        self.video = video;
        self.probe = None;
        self.video_continuity = None;
    }

    /// A packet on the video PID; `start` is where a frame starting in it starts (its own offset,
    /// or the first of the table packets right before it).
    fn handle_video_packet(
        &mut self,
        packet: &TsPacket<'_>,
        start: u64,
        keyframes: &mut Vec<Keyframe>,
    ) {
        let Some(payload) = packet.payload else {
            return;
        };
        let Some(video) = self.video else {
            return;
        };
        if let Some(last) = self.video_continuity
            && !packet.discontinuity
        {
            if packet.continuity_counter == last {
                // A duplicate packet (allowed once by ISO 13818-1): its payload was seen.
                return;
            }
            if packet.continuity_counter != (last + 1) & 0x0F {
                // Packets were lost: the bytes of a probe are no longer contiguous.
                self.probe = None;
            }
        }
        self.video_continuity = Some(packet.continuity_counter);
        if packet.payload_unit_start {
            self.probe = Some(PesProbe {
                offset: start,
                random_access: packet.random_access,
                bytes: Vec::new(),
                header: None,
            });
        }
        let Some(mut probe) = self.probe.take() else {
            return;
        };
        let room = MAX_PES_PROBE_BYTES - probe.bytes.len();
        probe
            .bytes
            .extend_from_slice(payload.get(..room).unwrap_or(payload));
        if probe.header.is_none() {
            match parse_pes_header(&probe.bytes) {
                PesHeader::Invalid => return,
                PesHeader::Incomplete => {
                    if probe.bytes.len() < MAX_PES_PROBE_BYTES {
                        self.probe = Some(probe);
                    }
                    return;
                }
                PesHeader::Parsed { pts, es_start } => {
                    if let (Some(frames), Some(pts)) = (&mut self.frame_starts, pts) {
                        frames.push(Keyframe {
                            offset: probe.offset,
                            pts,
                        });
                    }
                    if let (Some(samples), Some(pts)) = (&mut self.pts_samples, pts)
                        && samples.len() < MAX_FPS_SAMPLES
                    {
                        samples.push(pts);
                    }
                    probe.header = Some((pts, es_start));
                }
            }
        }
        let Some((Some(pts), es_start)) = probe.header else {
            // No PTS: nothing to put in a seek table.
            return;
        };
        let verdict = if probe.random_access {
            Verdict::Keyframe
        } else {
            classify_access_unit(probe.bytes.get(es_start..).unwrap_or(&[]), video.codec)
        };
        match verdict {
            Verdict::Keyframe => keyframes.push(Keyframe {
                offset: probe.offset,
                pts,
            }),
            Verdict::NotKeyframe => {}
            Verdict::NeedMore => {
                if probe.bytes.len() < MAX_PES_PROBE_BYTES {
                    self.probe = Some(probe);
                }
            }
        }
    }
}

/// Whole-file scan.
#[cfg(test)]
pub fn scan(bytes: &[u8]) -> Vec<Keyframe> {
    let mut indexer = TsIndexer::new(0);
    let mut keyframes = indexer.feed(bytes);
    keyframes.extend(indexer.finish());
    keyframes
}

/// Builders of MPEG-TS streams for tests (here and in `index_cmd`).
#[cfg(test)]
pub(crate) mod test_stream {
    use super::*;
    use std::collections::HashMap;

    pub(crate) const PMT_PID: u16 = 0x1000;
    pub(crate) const VIDEO_PID: u16 = 0x0100;
    pub(crate) const AUDIO_PID: u16 = 0x0101;
    pub(crate) const STREAM_TYPE_H264: u8 = 0x1B;
    pub(crate) const STREAM_TYPE_HEVC: u8 = 0x24;
    pub(crate) const STREAM_TYPE_MPEG2: u8 = 0x02;
    pub(crate) const STREAM_TYPE_AAC: u8 = 0x0F;
    pub(crate) const FRAME_TICKS_25: u64 = 3600;

    pub(crate) fn long_section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
        let section_length = 5 + body.len() + 4;
        let mut section = vec![
            table_id,
            0xB0 | (section_length >> 8) as u8,
            section_length as u8,
            (id >> 8) as u8,
            id as u8,
            0xC1, // version 0, current_next_indicator 1
            0,
            0,
        ];
        section.extend_from_slice(body);
        let crc = crc32_mpeg2(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        section
    }

    pub(crate) fn pat_section(programs: &[(u16, u16)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(program, pid) in programs {
            body.extend_from_slice(&program.to_be_bytes());
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        }
        long_section(0x00, 1, &body)
    }

    pub(crate) fn pmt_section(streams: &[(u8, u16)], program_info: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let pcr_pid = streams.first().map_or(0x1FFF, |s| s.1);
        body.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
        body.extend_from_slice(&(0xF000 | program_info.len() as u16).to_be_bytes());
        body.extend_from_slice(program_info);
        for &(stream_type, pid) in streams {
            body.push(stream_type);
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            body.extend_from_slice(&0xF000u16.to_be_bytes());
        }
        long_section(0x02, 1, &body)
    }

    pub(crate) fn encode_timestamp(pts: u64) -> [u8; 5] {
        [
            0x21 | ((pts >> 29) & 0x0E) as u8,
            (pts >> 22) as u8,
            (((pts >> 14) & 0xFE) | 1) as u8,
            (pts >> 7) as u8,
            (((pts << 1) & 0xFE) | 1) as u8,
        ]
    }

    pub(crate) fn pes_bytes(pts: Option<u64>, elementary: &[u8]) -> Vec<u8> {
        let mut pes = vec![0x00, 0x00, 0x01, 0xE0, 0x00, 0x00, 0x80];
        match pts {
            Some(pts) => {
                pes.extend_from_slice(&[0x80, 5]);
                pes.extend_from_slice(&encode_timestamp(pts));
            }
            None => pes.extend_from_slice(&[0x00, 0]),
        }
        pes.extend_from_slice(elementary);
        pes
    }

    pub(crate) const H264_AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

    pub(crate) fn h264_idr() -> Vec<u8> {
        let mut es = H264_AUD.to_vec();
        es.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1F, 0xAC]); // SPS
        es.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xEE, 0x3C, 0x80]); // PPS
        es.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84]); // IDR slice
        es.extend_from_slice(&[0x5A; 300]);
        es
    }

    pub(crate) fn h264_non_idr() -> Vec<u8> {
        let mut es = H264_AUD.to_vec();
        es.extend_from_slice(&[0, 0, 1, 0x41, 0x9A, 0x02]); // non-IDR slice
        es.extend_from_slice(&[0x5A; 200]);
        es
    }

    pub(crate) fn hevc_picture(nal_type: u8) -> Vec<u8> {
        let mut es = vec![0, 0, 0, 1, 35 << 1, 0x01, 0x50]; // AUD
        es.extend_from_slice(&[0, 0, 0, 1, 32 << 1, 0x01, 0x0C]); // VPS
        es.extend_from_slice(&[0, 0, 1, nal_type << 1, 0x01, 0xAF]);
        es.extend_from_slice(&[0x5A; 100]);
        es
    }

    /// Writes TS packets with per-PID continuity counters.
    #[derive(Default)]
    pub(crate) struct TsWriter {
        pub(crate) bytes: Vec<u8>,
        pub(crate) continuity: HashMap<u16, u8>,
        /// Where the table packets written since the last other packet start.
        pub(crate) tables_from: Option<u64>,
    }

    impl TsWriter {
        pub(crate) fn next_cc(&mut self, pid: u16) -> u8 {
            let cc = self.continuity.entry(pid).or_insert(0x0F);
            *cc = (*cc + 1) & 0x0F;
            *cc
        }

        /// One packet carrying as much of `payload` as fits; returns the bytes taken.
        pub(crate) fn packet(
            &mut self,
            pid: u16,
            start: bool,
            random_access: bool,
            payload: &[u8],
        ) -> usize {
            let cc = self.next_cc(pid);
            let mut packet = vec![0x47, (u8::from(start) << 6) | (pid >> 8) as u8, pid as u8];
            let taken;
            if !random_access && payload.len() >= 184 {
                taken = 184;
                packet.push(0x10 | cc);
            } else {
                taken = payload.len().min(182);
                let adaptation_length = 183 - taken;
                let control = if taken == 0 { 0x20 } else { 0x30 };
                packet.push(control | cc);
                packet.push(adaptation_length as u8);
                packet.push(if random_access { 0x40 } else { 0x00 });
                packet.resize(packet.len() + adaptation_length - 1, 0xFF);
            }
            packet.extend_from_slice(&payload[..taken]);
            assert_eq!(packet.len(), TS_PACKET_SIZE);
            self.bytes.extend_from_slice(&packet);
            self.tables_from = None;
            taken
        }

        pub(crate) fn psi(&mut self, pid: u16, section: &[u8]) {
            let mut payload = vec![0x00]; // pointer_field
            payload.extend_from_slice(section);
            self.tables_from.get_or_insert(self.bytes.len() as u64);
            let mut start = true;
            for chunk in payload.chunks(184) {
                let cc = self.next_cc(pid);
                let mut packet = vec![0x47, (u8::from(start) << 6) | (pid >> 8) as u8, pid as u8];
                packet.push(0x10 | cc);
                packet.extend_from_slice(chunk);
                packet.resize(TS_PACKET_SIZE, 0xFF);
                self.bytes.extend_from_slice(&packet);
                start = false;
            }
        }

        pub(crate) fn tables(&mut self, stream_type: u8) {
            self.psi(0, &pat_section(&[(1, PMT_PID)]));
            self.psi(
                PMT_PID,
                &pmt_section(
                    &[(stream_type, VIDEO_PID), (STREAM_TYPE_AAC, AUDIO_PID)],
                    &[],
                ),
            );
        }

        /// A whole PES on `pid`; returns where a player starts to decode it: the offset of its
        /// first packet, or of the table packets written right before it.
        pub(crate) fn pes(&mut self, pid: u16, random_access: bool, pes: &[u8]) -> u64 {
            let offset = self.tables_from.unwrap_or(self.bytes.len() as u64);
            let mut rest = pes;
            let mut start = true;
            while !rest.is_empty() {
                let taken = self.packet(pid, start, random_access && start, rest);
                rest = &rest[taken..];
                start = false;
            }
            offset
        }

        pub(crate) fn frame(&mut self, pts: u64, random_access: bool, elementary: &[u8]) -> u64 {
            self.pes(VIDEO_PID, random_access, &pes_bytes(Some(pts), elementary))
        }
    }

    /// A 25 fps H.264 stream, GOP of 5, keyframes with RAI and IDR, an audio PES between frames.
    pub(crate) fn h264_stream(frames: u64, first_pts: u64) -> (Vec<u8>, Vec<Keyframe>) {
        let mut writer = TsWriter::default();
        let mut expected = Vec::new();
        for frame in 0..frames {
            let pts = (first_pts + frame * FRAME_TICKS_25) % PTS_MODULUS;
            if frame % 5 == 0 {
                writer.tables(STREAM_TYPE_H264);
                let offset = writer.frame(pts, true, &h264_idr());
                expected.push(Keyframe { offset, pts });
            } else {
                writer.frame(pts, false, &h264_non_idr());
            }
            writer.pes(AUDIO_PID, false, &pes_bytes(Some(pts), &[0xFF, 0xF1, 0x50]));
        }
        (writer.bytes, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::test_stream::*;
    use super::*;

    fn feed_in_pieces(bytes: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<Keyframe> {
        let mut indexer = TsIndexer::new(0);
        let mut keyframes = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let size = sizes().clamp(1, rest.len());
            keyframes.extend(indexer.feed(&rest[..size]));
            rest = &rest[size..];
        }
        keyframes.extend(indexer.finish());
        keyframes
    }

    #[test]
    fn crc32_mpeg2_matches_the_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        let section = pat_section(&[(1, PMT_PID)]);
        assert_eq!(crc32_mpeg2(&section), 0);
    }

    #[test]
    fn finds_keyframes_with_random_access_indicator_and_pts() {
        let (bytes, expected) = h264_stream(12, 126_000);
        let keyframes = scan(&bytes);
        assert_eq!(keyframes.len(), 3);
        assert_eq!(keyframes, expected);
        assert_eq!(keyframes[0].pts, 126_000);
        assert_eq!(keyframes[1].pts, 126_000 + 5 * FRAME_TICKS_25);
        for keyframe in &keyframes {
            let packet = &bytes[keyframe.offset as usize..][..TS_PACKET_SIZE];
            assert_eq!(packet[0], TS_SYNC_BYTE);
            assert_ne!(packet[1] & 0x40, 0, "payload_unit_start_indicator");
        }
    }

    #[test]
    fn a_keyframe_starts_at_the_pat_pmt_and_sdt_written_right_before_it() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.frame(0, false, &h264_non_idr());
        let pat = writer.bytes.len() as u64;
        writer.tables(STREAM_TYPE_H264);
        writer.psi(SDT_PID, &long_section(0x42, 1, &[0xFF; 8]));
        let keyframe_packet = writer.bytes.len() as u64;
        writer.frame(3600, true, &h264_idr());
        assert_eq!(
            scan(&writer.bytes),
            vec![Keyframe {
                offset: pat,
                pts: 3600
            }]
        );
        let packet = &writer.bytes[pat as usize..][..TS_PACKET_SIZE];
        assert_eq!(u16::from_be_bytes([packet[1] & 0x1F, packet[2]]), PAT_PID);
        assert_eq!(keyframe_packet - pat, 3 * TS_PACKET_SIZE as u64);
    }

    #[test]
    fn tables_cut_off_from_the_keyframe_by_another_packet_do_not_count() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.pes(AUDIO_PID, false, &pes_bytes(Some(0), &[0xFF, 0xF1, 0x50]));
        let keyframe_packet = writer.bytes.len() as u64;
        writer.frame(3600, true, &h264_idr());
        let keyframe = Keyframe {
            offset: keyframe_packet,
            pts: 3600,
        };
        assert_eq!(scan(&writer.bytes), vec![keyframe]);
    }

    #[test]
    fn a_long_run_of_tables_keeps_only_its_last_packets() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        for _ in 0..20 {
            writer.psi(SDT_PID, &long_section(0x42, 1, &[0xFF; 8]));
        }
        let keyframe_packet = writer.bytes.len() as u64;
        writer.frame(3600, true, &h264_idr());
        let back = MAX_TABLE_RUN_PACKETS * TS_PACKET_SIZE as u64;
        let keyframe = Keyframe {
            offset: keyframe_packet - back,
            pts: 3600,
        };
        assert_eq!(scan(&writer.bytes), vec![keyframe]);
    }

    #[test]
    fn null_packets_between_the_tables_and_the_keyframe_keep_the_run() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.packet(NULL_PID, false, false, &[0xFF; 184]);
        writer.tables(STREAM_TYPE_H264);
        writer.packet(NULL_PID, false, false, &[0xFF; 184]);
        writer.frame(3600, true, &h264_idr());
        // The run began at the first PAT: the null packets among the tables kept it going.
        assert_eq!(
            scan(&writer.bytes),
            vec![Keyframe {
                offset: 0,
                pts: 3600
            }]
        );
        // A null packet with no table before it starts no run.
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.frame(0, false, &h264_non_idr());
        let null = writer.bytes.len() as u64;
        writer.packet(NULL_PID, false, false, &[0xFF; 184]);
        writer.frame(3600, true, &h264_idr());
        let keyframe = Keyframe {
            offset: null + TS_PACKET_SIZE as u64,
            pts: 3600,
        };
        assert_eq!(scan(&writer.bytes), vec![keyframe]);
    }

    #[test]
    fn h264_idr_without_random_access_indicator_is_a_keyframe_and_non_idr_is_not() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let idr = writer.frame(9000, false, &h264_idr());
        writer.frame(12600, false, &h264_non_idr());
        assert_eq!(
            scan(&writer.bytes),
            vec![Keyframe {
                offset: idr,
                pts: 9000
            }]
        );
    }

    #[test]
    fn hevc_irap_pictures_are_keyframes_and_trailing_pictures_are_not() {
        const TRAIL_R: u8 = 1;
        const RASL_N: u8 = 8;
        const BLA_W_LP: u8 = 16;
        const IDR_W_RADL: u8 = 19;
        const CRA: u8 = 21;
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_HEVC);
        let mut expected = Vec::new();
        for (index, nal_type) in [IDR_W_RADL, TRAIL_R, CRA, RASL_N, BLA_W_LP]
            .into_iter()
            .enumerate()
        {
            let pts = 1000 + index as u64 * FRAME_TICKS_25;
            let offset = writer.frame(pts, false, &hevc_picture(nal_type));
            if nal_type >= 16 {
                expected.push(Keyframe { offset, pts });
            }
        }
        assert_eq!(scan(&writer.bytes), expected);
    }

    #[test]
    fn mpeg2_keyframes_are_marked_or_sequence_header_and_i_picture() {
        const SEQUENCE_HEADER: [u8; 8] = [0x00, 0x00, 0x01, 0xB3, 0x14, 0x00, 0xF0, 0x13];
        const GOP_HEADER: [u8; 8] = [0x00, 0x00, 0x01, 0xB8, 0x00, 0x08, 0x00, 0x00];
        let picture =
            |coding_type: u8| [0x00, 0x00, 0x01, 0x00, 0x00, coding_type << 3, 0xFF, 0xF8];
        let with_sequence = |coding_type: u8| {
            let mut es = SEQUENCE_HEADER.to_vec();
            es.extend_from_slice(&GOP_HEADER);
            es.extend_from_slice(&picture(coding_type));
            es
        };
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_MPEG2);
        let marked = writer.frame(3600, true, &picture(2));
        let unmarked_i = writer.frame(7200, false, &with_sequence(1));
        writer.frame(10800, false, &with_sequence(2)); // P-picture
        writer.frame(14400, false, &picture(1)); // I-picture without a sequence header
        let mut slice_first = SEQUENCE_HEADER.to_vec();
        slice_first.extend_from_slice(&[0x00, 0x00, 0x01, 0x01, 0x22]);
        slice_first.extend_from_slice(&picture(1));
        writer.frame(18000, false, &slice_first);
        // An H.264 IDR NAL pattern means nothing in an MPEG-2 stream.
        writer.frame(21600, false, &h264_idr());
        assert_eq!(
            scan(&writer.bytes),
            vec![
                Keyframe {
                    offset: marked,
                    pts: 3600
                },
                Keyframe {
                    offset: unmarked_i,
                    pts: 7200
                }
            ]
        );
    }

    #[test]
    fn mpeg4_part2_keyframes_need_the_random_access_indicator() {
        const STREAM_TYPE_MPEG4: u8 = 0x10;
        let vop = [0x00, 0x00, 0x01, 0xB6, 0x10, 0x22]; // I-VOP
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_MPEG4);
        let marked = writer.frame(3600, true, &vop);
        writer.frame(7200, false, &vop);
        writer.frame(10800, false, &h264_idr());
        assert_eq!(
            scan(&writer.bytes),
            vec![Keyframe {
                offset: marked,
                pts: 3600
            }]
        );
    }

    #[test]
    fn audio_only_stream_has_no_video_pid_and_no_keyframes() {
        let mut writer = TsWriter::default();
        writer.psi(0, &pat_section(&[(1, PMT_PID)]));
        writer.psi(PMT_PID, &pmt_section(&[(STREAM_TYPE_AAC, AUDIO_PID)], &[]));
        writer.pes(AUDIO_PID, true, &pes_bytes(Some(0), &h264_idr()));
        let mut indexer = TsIndexer::new(0);
        assert!(indexer.feed(&writer.bytes).is_empty());
        assert_eq!(indexer.video_pid(), None);
        assert_eq!(
            indexer.packets_scanned(),
            (writer.bytes.len() / TS_PACKET_SIZE) as u64
        );
    }

    #[test]
    fn idr_slice_several_packets_into_the_pes_reports_the_first_packet() {
        let mut es = H264_AUD.to_vec();
        es.extend_from_slice(&[0, 0, 1, 0x06, 0x05]); // SEI, like x264's version string
        es.extend_from_slice(&[0xAA; 700]);
        es.extend_from_slice(&h264_idr());
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let offset = writer.frame(4500, false, &es);
        assert_eq!(scan(&writer.bytes), vec![Keyframe { offset, pts: 4500 }]);
    }

    #[test]
    fn idr_slice_past_the_probe_limit_is_not_found() {
        let build = |filler: usize| {
            let mut es = H264_AUD.to_vec();
            es.extend_from_slice(&[0, 0, 1, 0x06, 0x05]);
            es.resize(es.len() + filler, 0xAA);
            es.extend_from_slice(&[0, 0, 1, 0x65, 0x88]);
            es.extend_from_slice(&[0x5A; 400]);
            let mut writer = TsWriter::default();
            writer.tables(STREAM_TYPE_H264);
            writer.frame(4500, false, &es);
            scan(&writer.bytes)
        };
        const PES_HEADER_BYTES: usize = 14;
        let fixed = PES_HEADER_BYTES + H264_AUD.len() + 5 + 4; // + SEI head + IDR start code and header
        assert_eq!(build(MAX_PES_PROBE_BYTES - fixed).len(), 1);
        assert!(build(MAX_PES_PROBE_BYTES - fixed + 1).is_empty());
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_keyframes() {
        let (bytes, expected) = h264_stream(16, 0);
        assert_eq!(feed_in_pieces(&bytes, &mut || 1), expected);
        for size in [2, 7, 187, 188, 189, 376, 377, 1000] {
            assert_eq!(
                feed_in_pieces(&bytes, &mut || size),
                expected,
                "size {size}"
            );
        }
        let mut state: u64 = 0x1234_5678;
        let mut random = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % 600
        };
        for _ in 0..20 {
            assert_eq!(feed_in_pieces(&bytes, &mut random), expected);
        }
        for cut in 0..=bytes.len() {
            let mut indexer = TsIndexer::new(0);
            let mut keyframes = indexer.feed(&bytes[..cut]);
            keyframes.extend(indexer.feed(&bytes[cut..]));
            keyframes.extend(indexer.finish());
            assert_eq!(keyframes, expected, "cut at {cut}");
        }
    }

    #[test]
    fn offsets_count_from_the_base_offset() {
        let (bytes, expected) = h264_stream(6, 0);
        let base = 5_000_000_000;
        let mut indexer = TsIndexer::new(base);
        let mut keyframes = indexer.feed(&bytes[..1000]);
        keyframes.extend(indexer.feed(&bytes[1000..]));
        let shifted: Vec<Keyframe> = expected
            .iter()
            .map(|k| Keyframe {
                offset: k.offset + base,
                pts: k.pts,
            })
            .collect();
        assert_eq!(keyframes, shifted);
    }

    #[test]
    fn garbage_before_the_first_packet_is_skipped() {
        let (bytes, expected) = h264_stream(11, 0);
        // Stray sync bytes in the garbage are not confirmed a packet later.
        let mut garbage = vec![0x47, 0x00, 0x12, 0x47, 0x47, 0x99];
        garbage.resize(250, 0x33);
        garbage[100] = 0x47;
        let mut input = garbage.clone();
        input.extend_from_slice(&bytes);
        let shifted: Vec<Keyframe> = expected
            .iter()
            .map(|k| Keyframe {
                offset: k.offset + garbage.len() as u64,
                pts: k.pts,
            })
            .collect();
        assert_eq!(scan(&input), shifted);
        assert_eq!(feed_in_pieces(&input, &mut || 13), shifted);
    }

    #[test]
    fn resyncs_after_a_damaged_packet_in_the_middle() {
        let (bytes, expected) = h264_stream(15, 0);
        // Cut 100 bytes out of the first packet of the second GOP's frame 1, after its keyframe.
        let damage_at = expected[1].offset as usize + 3 * TS_PACKET_SIZE + 40;
        let mut input = bytes[..damage_at].to_vec();
        input.extend_from_slice(&bytes[damage_at + 100..]);
        let keyframes = scan(&input);
        assert_eq!(keyframes.len(), 3);
        assert_eq!(&keyframes[..2], &expected[..2]);
        assert_eq!(
            keyframes[2],
            Keyframe {
                offset: expected[2].offset - 100,
                pts: expected[2].pts
            }
        );
        assert_eq!(feed_in_pieces(&input, &mut || 100), keyframes);
    }

    #[test]
    fn last_packet_after_a_resync_is_scanned_at_finish() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let tables = writer.bytes.clone();
        let mut one = TsWriter {
            continuity: writer.continuity.clone(),
            ..TsWriter::default()
        };
        one.frame(1800, true, &[0, 0, 1, 0x65, 0x88]);
        assert_eq!(one.bytes.len(), TS_PACKET_SIZE);
        let mut input = tables.clone();
        input.extend_from_slice(&[0x00; 10]); // lose sync
        input.extend_from_slice(&one.bytes);
        let mut indexer = TsIndexer::new(0);
        assert!(indexer.feed(&input).is_empty());
        let keyframes = indexer.finish();
        assert_eq!(
            keyframes,
            vec![Keyframe {
                offset: tables.len() as u64 + 10,
                pts: 1800
            }]
        );
    }

    #[test]
    fn truncated_and_tiny_inputs_do_not_panic() {
        let (bytes, expected) = h264_stream(10, 0);
        for cut in [0, 1, 187, 188, 189, bytes.len() - 1] {
            let keyframes = scan(&bytes[..cut]);
            assert!(keyframes.iter().all(|k| expected.contains(k)));
        }
        assert!(scan(&[]).is_empty());
        assert!(scan(&[0x47; 188 * 4]).is_empty());
        assert!(scan(&[0xFF; 1000]).is_empty());
    }

    #[test]
    fn random_and_mutated_input_does_not_panic() {
        let (bytes, _) = h264_stream(20, 0);
        let mut state: u64 = 42;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let noise: Vec<u8> = (0..50_000).map(|_| next() as u8).collect();
        scan(&noise);
        for _ in 0..200 {
            let mut mutated = bytes.clone();
            for _ in 0..20 {
                let at = next() % mutated.len();
                mutated[at] = next() as u8;
            }
            scan(&mutated);
            feed_in_pieces(&mutated, &mut || next() % 400);
        }
    }

    #[test]
    fn video_before_the_pat_and_pmt_is_ignored() {
        let mut writer = TsWriter::default();
        writer.frame(0, true, &h264_idr());
        writer.tables(STREAM_TYPE_H264);
        let offset = writer.frame(3600, true, &h264_idr());
        assert_eq!(scan(&writer.bytes), vec![Keyframe { offset, pts: 3600 }]);
    }

    #[test]
    fn pmt_spanning_two_packets_is_reassembled() {
        let descriptors = vec![0x05, 200, 0x41, 0x42, 0x43, 0x44]
            .into_iter()
            .chain(std::iter::repeat_n(0x20, 196))
            .collect::<Vec<u8>>();
        let pmt = pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &descriptors);
        assert!(pmt.len() > 183);
        let mut writer = TsWriter::default();
        writer.psi(0, &pat_section(&[(1, PMT_PID)]));
        writer.psi(PMT_PID, &pmt);
        let offset = writer.frame(100, true, &h264_idr());
        let mut indexer = TsIndexer::new(0);
        assert_eq!(
            indexer.feed(&writer.bytes),
            vec![Keyframe { offset, pts: 100 }]
        );
        assert_eq!(indexer.video_pid(), Some(VIDEO_PID));
    }

    #[test]
    fn pat_with_network_pid_and_second_program_finds_the_video_program() {
        const RADIO_PMT_PID: u16 = 0x1001;
        let mut writer = TsWriter::default();
        writer.psi(
            0,
            &pat_section(&[(0, 0x0010), (2, RADIO_PMT_PID), (1, PMT_PID)]),
        );
        writer.psi(
            RADIO_PMT_PID,
            &pmt_section(&[(STREAM_TYPE_AAC, AUDIO_PID)], &[]),
        );
        writer.psi(PMT_PID, &pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]));
        let offset = writer.frame(100, true, &h264_idr());
        assert_eq!(scan(&writer.bytes), vec![Keyframe { offset, pts: 100 }]);
    }

    #[test]
    fn sections_too_short_or_too_long_are_dropped_and_the_next_one_is_read() {
        for section_length in [0u16, 1, 8, 1022, 0x0FFF] {
            let mut writer = TsWriter::default();
            writer.psi(0, &pat_section(&[(1, PMT_PID)]));
            let bogus = [
                0x02,
                0xB0 | (section_length >> 8) as u8,
                section_length as u8,
                0x00,
                0x01,
            ];
            writer.psi(PMT_PID, &bogus);
            let mut indexer = TsIndexer::new(0);
            assert!(indexer.feed(&writer.bytes).is_empty());
            assert_eq!(indexer.video_pid(), None, "section_length {section_length}");
            writer.psi(PMT_PID, &pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]));
            let offset = writer.frame(100, true, &h264_idr());
            assert_eq!(
                scan(&writer.bytes),
                vec![Keyframe { offset, pts: 100 }],
                "section_length {section_length}"
            );
        }
    }

    #[test]
    fn two_sections_in_one_packet_and_a_pointer_past_the_end() {
        // The PAT and a PMT back to back after one pointer field on the PAT PID: only the PAT
        // counts there (a PMT on PID 0 is ignored), then a PMT packet whose pointer field
        // points past the packet is dropped, and a good one is read.
        let mut both = pat_section(&[(1, PMT_PID)]);
        both.extend_from_slice(&pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]));
        let mut writer = TsWriter::default();
        writer.psi(0, &both);
        let mut bad_pointer = vec![0x47, 0x40 | (PMT_PID >> 8) as u8, PMT_PID as u8, 0x10];
        bad_pointer.push(200);
        bad_pointer.resize(TS_PACKET_SIZE, 0x00);
        writer.bytes.extend_from_slice(&bad_pointer);
        let mut indexer = TsIndexer::new(0);
        indexer.feed(&writer.bytes);
        assert_eq!(indexer.video_pid(), None);
        assert_eq!(indexer.pmt_pids, vec![PMT_PID]);
        writer.psi(PMT_PID, &pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]));
        indexer.feed(&writer.bytes[indexer.packets_scanned() as usize * TS_PACKET_SIZE..]);
        assert_eq!(indexer.video_pid(), Some(VIDEO_PID));
    }

    #[test]
    fn sections_with_a_bad_crc_are_ignored() {
        let mut pmt = pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]);
        let last = pmt.len() - 1;
        pmt[last] ^= 0x01;
        let mut writer = TsWriter::default();
        writer.psi(0, &pat_section(&[(1, PMT_PID)]));
        writer.psi(PMT_PID, &pmt);
        writer.frame(100, true, &h264_idr());
        let mut indexer = TsIndexer::new(0);
        assert!(indexer.feed(&writer.bytes).is_empty());
        assert_eq!(indexer.video_pid(), None);
    }

    #[test]
    fn pmt_not_yet_current_is_ignored() {
        let mut pmt = pmt_section(&[(STREAM_TYPE_H264, VIDEO_PID)], &[]);
        pmt[5] &= !0x01; // current_next_indicator = 0
        let crc_at = pmt.len() - 4;
        let crc = crc32_mpeg2(&pmt[..crc_at]);
        pmt[crc_at..].copy_from_slice(&crc.to_be_bytes());
        let mut writer = TsWriter::default();
        writer.psi(0, &pat_section(&[(1, PMT_PID)]));
        writer.psi(PMT_PID, &pmt);
        writer.frame(100, true, &h264_idr());
        assert!(scan(&writer.bytes).is_empty());
    }

    #[test]
    fn pmt_update_moves_the_video_pid() {
        const NEW_VIDEO_PID: u16 = 0x0200;
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let first = writer.frame(100, true, &h264_idr());
        writer.psi(
            PMT_PID,
            &pmt_section(&[(STREAM_TYPE_H264, NEW_VIDEO_PID)], &[]),
        );
        writer.frame(3700, true, &h264_idr()); // old PID: no longer the video
        let second = writer.pes(NEW_VIDEO_PID, true, &pes_bytes(Some(7300), &h264_idr()));
        assert_eq!(
            scan(&writer.bytes),
            vec![
                Keyframe {
                    offset: first,
                    pts: 100
                },
                Keyframe {
                    offset: second,
                    pts: 7300
                }
            ]
        );
    }

    #[test]
    fn packets_with_errors_reserved_control_or_bad_adaptation_are_skipped() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let tables_len = writer.bytes.len();
        for damage in 0..4 {
            let mut frame = TsWriter {
                continuity: writer.continuity.clone(),
                ..TsWriter::default()
            };
            frame.frame(100, true, &h264_idr());
            let mut bytes = writer.bytes[..tables_len].to_vec();
            let mut packet = frame.bytes.clone();
            match damage {
                0 => packet[1] |= 0x80,                     // transport_error_indicator
                1 => packet[3] &= 0xCF,                     // adaptation_field_control 00
                2 => packet[4] = 183, // adaptation field too long with payload
                _ => packet[3] = (packet[3] & 0x3F) | 0x80, // scrambled
            }
            bytes.extend_from_slice(&packet);
            assert!(scan(&bytes).is_empty(), "damage {damage}");
            // The untouched packet is a keyframe.
            let mut good = writer.bytes[..tables_len].to_vec();
            good.extend_from_slice(&frame.bytes);
            assert_eq!(scan(&good).len(), 1);
        }
    }

    #[test]
    fn lost_packet_inside_a_probe_drops_it_and_duplicates_are_ignored() {
        let mut es = H264_AUD.to_vec();
        es.extend_from_slice(&[0, 0, 1, 0x06, 0x05]);
        es.extend_from_slice(&[0xAA; 400]);
        es.extend_from_slice(&h264_idr());
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        let tables_len = writer.bytes.len();
        let offset = writer.frame(100, false, &es);
        let packet = |i: usize| &writer.bytes[tables_len + i * TS_PACKET_SIZE..][..TS_PACKET_SIZE];

        let mut lost = writer.bytes[..tables_len].to_vec();
        lost.extend_from_slice(packet(0));
        lost.extend_from_slice(packet(2));
        lost.extend_from_slice(packet(3));
        lost.extend_from_slice(packet(4));
        assert!(scan(&lost).is_empty());

        let mut duplicated = writer.bytes[..tables_len].to_vec();
        duplicated.extend_from_slice(packet(0));
        duplicated.extend_from_slice(packet(1));
        duplicated.extend_from_slice(packet(1));
        for i in 2..5 {
            duplicated.extend_from_slice(packet(i));
        }
        assert_eq!(scan(&duplicated), vec![Keyframe { offset, pts: 100 }]);
    }

    #[test]
    fn pes_without_pts_or_with_a_bad_header_is_not_reported() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.pes(VIDEO_PID, true, &pes_bytes(None, &h264_idr()));
        let mut bad_marker = pes_bytes(Some(100), &h264_idr());
        bad_marker[6] = 0x40;
        writer.pes(VIDEO_PID, true, &bad_marker);
        let mut no_prefix = pes_bytes(Some(100), &h264_idr());
        no_prefix[2] = 0x02;
        writer.pes(VIDEO_PID, true, &no_prefix);
        let mut padding_stream = pes_bytes(Some(100), &h264_idr());
        padding_stream[3] = 0xBE;
        writer.pes(VIDEO_PID, true, &padding_stream);
        assert!(scan(&writer.bytes).is_empty());
    }

    #[test]
    fn pts_decoding_covers_all_33_bits() {
        for pts in [0, 1, 0x1_0000_0000, PTS_MODULUS - 1, 0x1_2345_6789] {
            assert_eq!(parse_timestamp(&encode_timestamp(pts)), Some(pts));
        }
        assert_eq!(parse_timestamp(&[0x21, 0, 1, 0]), None);
    }

    #[test]
    fn keyframes_across_a_pts_wrap_keep_their_raw_pts() {
        let first = PTS_MODULUS - 2 * FRAME_TICKS_25;
        let (bytes, expected) = h264_stream(11, first);
        let keyframes = scan(&bytes);
        assert_eq!(keyframes, expected);
        assert_eq!(keyframes[1].pts, 3 * FRAME_TICKS_25);
    }
}
