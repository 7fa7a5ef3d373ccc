//! Fragmented MP4 (ISO BMFF) as a live channel carries it: the init segment (`ftyp` + `moov`) of a
//! publish session and where each fragment (`moof`) starts, and whether it starts with a sync sample
//! of the video track. A pure, incremental parser of top-level boxes, fed bytes in any pieces; it keeps
//! only the boxes it reads (bounded) and skips `mdat` payloads by count.

/// Most bytes of an init segment kept (a larger `moov` is not kept: joins then start without one).
pub const MAX_INIT_BYTES: usize = 64 * 1024;
/// Most bytes of one `moof` read (a larger one is skipped and counts as not sync).
pub const MAX_MOOF_BYTES: usize = 256 * 1024;
/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fmp4Event {
    /// A complete init segment (`ftyp` + `moov`), starting at `offset`.
    Init { offset: u64, bytes: Vec<u8> },
    /// A `moof` at `offset`; `sync`: its video track's first sample is a sync sample; `time`: its
    /// video track's decode time (`tfdt`) in 90 kHz ticks modulo 2^33, when the `moov` gave a timescale.
    Fragment {
        offset: u64,
        sync: bool,
        time: Option<u64>,
    },
}

/// A top-level box being read: its start offset, kind, bytes left, and its bytes so far when kept
/// (None: skipped).
type OpenBox = (u64, [u8; 4], u64, Option<Vec<u8>>);

/// The incremental top-level box parser.
pub struct Fmp4Indexer {
    /// Offset of the next byte fed.
    pos: u64,
    /// Header bytes of the box being started (up to 16).
    header: Vec<u8>,
    /// The box being read: start offset, kind, bytes left, kept bytes (None: skipped).
    current: Option<OpenBox>,
    init: Vec<u8>,
    init_offset: Option<u64>,
    /// The video track of the last `moov`.
    video: Option<VideoTrack>,
    /// A box header was malformed: nothing more is parsed in this session.
    lost: bool,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The child boxes of a box body: (kind, body).
fn children(mut body: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while body.len() >= 8 {
        let size = be32(body, 0).unwrap_or(0) as usize;
        let kind: [u8; 4] = body[4..8].try_into().unwrap_or([0; 4]);
        let (hdr, size) = match size {
            1 => match body.get(8..16) {
                Some(b) => (
                    16,
                    u64::from_be_bytes(b.try_into().unwrap_or([0; 8])) as usize,
                ),
                None => break,
            },
            0 => (8, body.len()),
            n => (8, n),
        };
        if size < hdr || size > body.len() {
            break;
        }
        out.push((kind, &body[hdr..size]));
        body = &body[size..];
    }
    out
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b)
}

/// What a `moov` says of its video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VideoTrack {
    id: u32,
    /// `trex` default_sample_flags, or 0.
    flags: u32,
    /// `mdhd` timescale (units per second), 0 if unknown.
    timescale: u32,
}

/// The video track of a `moov` body.
fn video_track(moov: &[u8]) -> Option<VideoTrack> {
    let (id, timescale) = children(moov).into_iter().find_map(|(k, trak)| {
        if &k != b"trak" {
            return None;
        }
        let mdia = child(trak, b"mdia")?;
        let hdlr = child(mdia, b"hdlr")?;
        if hdlr.get(8..12)? != b"vide" {
            return None;
        }
        let tkhd = child(trak, b"tkhd")?;
        let at = if tkhd.first()? == &1 { 4 + 16 } else { 4 + 8 };
        // mdhd: version 1 has 64-bit creation and modification times before the timescale.
        let timescale = child(mdia, b"mdhd")
            .and_then(|m| be32(m, if m.first() == Some(&1) { 20 } else { 12 }))
            .unwrap_or(0);
        Some((be32(tkhd, at)?, timescale))
    })?;
    let flags = child(moov, b"mvex")
        .and_then(|mvex| {
            children(mvex)
                .into_iter()
                .filter(|(k, _)| k == b"trex")
                .find(|(_, t)| be32(t, 4) == Some(id))
                .and_then(|(_, t)| be32(t, 20))
        })
        .unwrap_or(0);
    Some(VideoTrack {
        id,
        flags,
        timescale,
    })
}

/// A `traf`'s `tfdt` base media decode time, in 90 kHz ticks modulo 2^33.
fn decode_time_90k(traf: &[u8], timescale: u32) -> Option<u64> {
    let tfdt = child(traf, b"tfdt")?;
    let units = match tfdt.first()? {
        1 => u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?),
        _ => u64::from(be32(tfdt, 4)?),
    };
    let ticks = u128::from(units) * 90_000 / u128::from(timescale).max(1);
    (timescale > 0).then_some((ticks % (1u128 << 33)) as u64)
}

/// Whether a `moof` body's video fragment starts with a sync sample, and its decode time.
fn moof_info(moof: &[u8], video: Option<VideoTrack>) -> (bool, Option<u64>) {
    let timescale = video.map_or(0, |v| v.timescale);
    for (kind, traf) in children(moof) {
        if &kind != b"traf" {
            continue;
        }
        let Some(tfhd) = child(traf, b"tfhd") else {
            continue;
        };
        if video.is_some_and(|v| be32(tfhd, 4) != Some(v.id)) {
            continue;
        }
        return (traf_is_sync(traf, video), decode_time_90k(traf, timescale));
    }
    (false, None)
}

/// Whether the video `traf` starts with a sync sample (`trun` first_sample_flags, else its first
/// sample's flags, else `tfhd` default_sample_flags, else `trex`'s).
fn traf_is_sync(traf: &[u8], video: Option<VideoTrack>) -> bool {
    let trex_flags = video.map_or(0, |v| v.flags);
    let Some(tfhd) = child(traf, b"tfhd") else {
        return false;
    };
    let tf_flags = be32(tfhd, 0).unwrap_or(0) & 0x00FF_FFFF;
    // tfhd optional fields in order: base offset (8), description index (4), duration (4),
    // size (4), flags (4).
    let mut at = 8;
    let mut default = trex_flags;
    for (bit, len) in [(0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4), (0x20, 4)] {
        if tf_flags & bit != 0 {
            if bit == 0x20 {
                default = be32(tfhd, at).unwrap_or(default);
            }
            at += len;
        }
    }
    let Some(trun) = child(traf, b"trun") else {
        return default & NON_SYNC == 0;
    };
    let tr_flags = be32(trun, 0).unwrap_or(0) & 0x00FF_FFFF;
    let mut at = 8 + if tr_flags & 0x1 != 0 { 4 } else { 0 };
    if tr_flags & 0x4 != 0 {
        return be32(trun, at).unwrap_or(default) & NON_SYNC == 0;
    }
    if tr_flags & 0x400 != 0 {
        at += [0x100, 0x200]
            .iter()
            .filter(|b| tr_flags & **b != 0)
            .count()
            * 4;
        return be32(trun, at).unwrap_or(default) & NON_SYNC == 0;
    }
    default & NON_SYNC == 0
}

impl Fmp4Indexer {
    /// A parser whose first fed byte, at `offset`, starts a top-level box.
    pub fn new(offset: u64) -> Fmp4Indexer {
        Fmp4Indexer {
            pos: offset,
            header: Vec::with_capacity(16),
            current: None,
            init: Vec::new(),
            init_offset: None,
            video: None,
            lost: false,
        }
    }

    /// A parser that already read `init` (a session's `ftyp` + `moov`, kept apart from the bytes
    /// fed): after a restart the window may start past it, but its fragments' flags and decode times
    /// need its video track.
    pub fn primed(offset: u64, init: &[u8]) -> Fmp4Indexer {
        let mut p = Fmp4Indexer::new(0);
        let _ = p.feed(init);
        Fmp4Indexer::new(offset).with_video(if p.lost { None } else { p.video })
    }

    fn with_video(mut self, video: Option<VideoTrack>) -> Fmp4Indexer {
        self.video = video;
        self
    }

    /// Scan the next bytes; returns what they completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Fmp4Event> {
        let mut events = Vec::new();
        while !bytes.is_empty() && !self.lost {
            let used = match self.current.is_some() {
                true => self.body_bytes(bytes, &mut events),
                false => self.header_bytes(bytes),
            };
            assert!(used > 0 && used <= bytes.len(), "the parser advances");
            self.pos += used as u64;
            bytes = &bytes[used..];
        }
        events
    }

    fn header_bytes(&mut self, bytes: &[u8]) -> usize {
        let want = if self.header.len() >= 8 && be32(&self.header, 0) == Some(1) {
            16
        } else {
            8
        };
        let n = (want - self.header.len()).min(bytes.len());
        self.header.extend_from_slice(&bytes[..n]);
        if self.header.len() < want || (want == 8 && be32(&self.header, 0) == Some(1)) {
            return n;
        }
        let size = match be32(&self.header, 0).unwrap_or(0) {
            1 => u64::from_be_bytes(self.header[8..16].try_into().unwrap_or([0; 8])),
            s => u64::from(s),
        };
        let kind: [u8; 4] = self.header[4..8].try_into().unwrap_or([0; 4]);
        let hdr = self.header.len() as u64;
        if size < hdr || !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            self.lost = true; // size 0 (to the end) or garbage: a live stream cannot be followed
            return n;
        }
        let start = self.pos + n as u64 - hdr;
        let keep = match &kind {
            b"ftyp" | b"moov" | b"moof" => {
                let cap = if &kind == b"moof" {
                    MAX_MOOF_BYTES
                } else {
                    MAX_INIT_BYTES
                };
                (size as usize <= cap).then(|| self.header.clone())
            }
            _ => None,
        };
        self.header.clear();
        self.current = Some((start, kind, size - hdr, keep));
        if size == hdr {
            self.finish_box(&mut Vec::new());
        }
        n
    }

    fn body_bytes(&mut self, bytes: &[u8], events: &mut Vec<Fmp4Event>) -> usize {
        let Some((_, _, left, keep)) = self.current.as_mut() else {
            return 0;
        };
        let n = (*left).min(bytes.len() as u64) as usize;
        if let Some(k) = keep {
            k.extend_from_slice(&bytes[..n]);
        }
        *left -= n as u64;
        if *left == 0 {
            self.finish_box(events);
        }
        n
    }

    fn finish_box(&mut self, events: &mut Vec<Fmp4Event>) {
        let Some((start, kind, _, keep)) = self.current.take() else {
            return;
        };
        match (&kind, keep) {
            (b"ftyp", Some(b)) => {
                self.init = b;
                self.init_offset = Some(start);
            }
            (b"moov", Some(b)) => {
                let hdr = if be32(&b, 0) == Some(1) { 16 } else { 8 };
                self.video = video_track(&b[hdr..]);
                let offset = self.init_offset.take().unwrap_or(start);
                let mut init = std::mem::take(&mut self.init);
                if init.len() + b.len() <= MAX_INIT_BYTES {
                    init.extend_from_slice(&b);
                    events.push(Fmp4Event::Init {
                        offset,
                        bytes: init,
                    });
                }
            }
            (b"moof", keep) => {
                let (sync, time) = keep.map_or((false, None), |b| moof_info(&b[8..], self.video));
                events.push(Fmp4Event::Fragment {
                    offset: start,
                    sync,
                    time,
                });
            }
            _ => {}
        }
    }
}

/// Where a `moof` box starts at or after `from` in `bytes` (whose first byte is at offset `base`):
/// the fourcc `moof` with a plausible size before it and an `mfhd` box first inside. Used to find a
/// box boundary again after a restart, when the window starts inside a box.
pub fn find_moof(bytes: &[u8], base: u64) -> Option<u64> {
    let mut at = 4;
    while at + 12 <= bytes.len() {
        let found = bytes[at..].windows(4).position(|w| w == b"moof")?;
        let p = at + found;
        if p >= 4
            && bytes.get(p + 8..p + 12) == Some(b"mfhd")
            && be32(bytes, p - 4).is_some_and(|s| s >= 24)
        {
            return Some(base + (p - 4) as u64);
        }
        at = p + 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    fn full(version_flags: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = version_flags.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    fn moov(track: u32) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&track.to_be_bytes());
        let tkhd = full(0, &[&tkhd[..], &[0; 60]].concat());
        let hdlr = full(0, &[&[0u8; 4][..], b"vide", &[0; 12]].concat());
        let trak = bx(
            b"trak",
            &[bx(b"tkhd", &tkhd), bx(b"mdia", &bx(b"hdlr", &hdlr))].concat(),
        );
        bx(b"moov", &trak)
    }

    fn moof(track: u32, first_flags: u32) -> Vec<u8> {
        let tfhd = full(0, &track.to_be_bytes());
        let trun = full(
            0x4,
            &[&1u32.to_be_bytes()[..], &first_flags.to_be_bytes()].concat(),
        );
        let traf = bx(b"traf", &[bx(b"tfhd", &tfhd), bx(b"trun", &trun)].concat());
        bx(
            b"moof",
            &[bx(b"mfhd", &full(0, &[0, 0, 0, 1])), traf].concat(),
        )
    }

    #[test]
    fn finds_init_and_sync_fragments_in_any_split() {
        let ftyp = bx(b"ftyp", b"isom\0\0\0\0");
        let stream = [
            ftyp.clone(),
            moov(1),
            moof(1, 0x0200_0000),
            bx(b"mdat", &[7; 300]),
            moof(1, 0x0101_0000),
            bx(b"mdat", &[8; 100]),
        ]
        .concat();
        let init_len = (ftyp.len() + moov(1).len()) as u64;
        let second = init_len + moof(1, 0).len() as u64 + 308;
        for piece in [1, 3, 7, 64, stream.len()] {
            let mut p = Fmp4Indexer::new(1000);
            let events: Vec<Fmp4Event> = stream.chunks(piece).flat_map(|c| p.feed(c)).collect();
            assert_eq!(
                events,
                vec![
                    Fmp4Event::Init {
                        offset: 1000,
                        bytes: [ftyp.clone(), moov(1)].concat()
                    },
                    Fmp4Event::Fragment {
                        offset: 1000 + init_len,
                        sync: true,
                        time: None
                    },
                    Fmp4Event::Fragment {
                        offset: 1000 + second,
                        sync: false,
                        time: None
                    },
                ],
                "pieces of {piece}"
            );
        }
        assert_eq!(find_moof(&stream[5..], 5), Some(init_len));
    }

    #[test]
    fn decode_times_come_in_90_khz_ticks_also_after_priming_with_a_kept_init() {
        // moov with an mdhd of timescale 12800 (ffmpeg's for 25 fps), version 0.
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&1u32.to_be_bytes());
        let tkhd = full(0, &[&tkhd[..], &[0; 60]].concat());
        let hdlr = full(0, &[&[0u8; 4][..], b"vide", &[0; 12]].concat());
        let mdhd = full(
            0,
            &[&[0u8; 8][..], &12_800u32.to_be_bytes(), &[0; 8]].concat(),
        );
        let mdia = bx(b"mdia", &[bx(b"mdhd", &mdhd), bx(b"hdlr", &hdlr)].concat());
        let moov = bx(b"moov", &bx(b"trak", &[bx(b"tkhd", &tkhd), mdia].concat()));
        let init = [bx(b"ftyp", b"isom\0\0\0\0"), moov].concat();
        let tfhd = full(0, &1u32.to_be_bytes());
        let tfdt = full(1 << 24, &(12_800u64 * 3).to_be_bytes());
        let trun = full(
            0x4,
            &[&1u32.to_be_bytes()[..], &0x0200_0000u32.to_be_bytes()].concat(),
        );
        let traf = bx(
            b"traf",
            &[bx(b"tfhd", &tfhd), bx(b"tfdt", &tfdt), bx(b"trun", &trun)].concat(),
        );
        let moof = bx(
            b"moof",
            &[bx(b"mfhd", &full(0, &[0, 0, 0, 1])), traf].concat(),
        );
        let want = Fmp4Event::Fragment {
            offset: 500,
            sync: true,
            time: Some(3 * 90_000),
        };
        let mut primed = Fmp4Indexer::primed(500, &init);
        assert_eq!(primed.feed(&moof), vec![want.clone()]);
        let mut whole = Fmp4Indexer::new(500 - init.len() as u64);
        let events = whole.feed(&[init.clone(), moof].concat());
        assert_eq!(events.last(), Some(&want));
    }

    #[test]
    fn garbage_stops_the_parse_without_panicking() {
        let mut p = Fmp4Indexer::new(0);
        assert!(
            p.feed(&[0, 0, 0, 3, b'x', b'y', b'z', b'w', 1, 2, 3])
                .is_empty()
        );
        assert!(p.feed(&[0; 100]).is_empty());
        let mut q = Fmp4Indexer::new(0);
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..97)
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7)) as u8)
                .collect();
            let _ = q.feed(&junk);
        }
    }
}
