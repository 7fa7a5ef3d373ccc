//! Frame stamps for glass-to-glass latency: an ffmpeg filter that writes each frame's number into
//! its picture, so a viewer's shown frame can be read back from its pixels (`tests/browser/run.mjs`,
//! `stampOf`) whatever timeline its player uses. Bit k of the frame number n is a white 32×32 square
//! at x = 40k + 4, y = 4 on a black band 40 px high; 14 bits count 655 s at 25 fps.

/// Bits of the frame number stamped.
pub const STAMP_BITS: u32 = 14;

/// The `-vf` filter (a chain of drawbox; `n` is the frame number in the timeline `enable` option).
pub fn frame_stamp_filter() -> String {
    let mut filter = format!(
        "drawbox=x=0:y=0:w={}:h=40:color=black:t=fill",
        40 * STAMP_BITS
    );
    for k in 0..STAMP_BITS {
        filter.push_str(&format!(
            ",drawbox=x={}:y=4:w=32:h=32:color=white:t=fill:enable='mod(floor(n/{}),2)'",
            40 * k + 4,
            1u32 << k
        ));
    }
    filter
}
