//! A ranged PUT that repeats bytes already present (a client retrying a write whose answer it lost):
//! its body is read into a small scratch buffer and compared with the mapping as it arrives, never
//! written. 200 as for the write once the whole range matched (after the commit that made those bytes
//! durable), 409 once the body is read if any byte differed.

use super::{Conn, Ctx, INGEST_BUDGET_PER_TURN, State, Step, ms};
use crate::http::HttpError;
use crate::routes::VerifyPlan;
use crate::store::Availability;

use super::reader::Got;

/// Scratch bytes a repeated body is read into before each comparison.
const VERIFY_SCRATCH: usize = 64 << 10;

pub(super) struct Verify {
    plan: VerifyPlan,
    /// The video's generation when routing decided: a DELETE meanwhile makes the repeat a conflict.
    generation: u64,
    /// Next offset to compare.
    cursor: u64,
    /// Some byte differed (or the bytes stopped being present): answer 409 once the body is read.
    differs: bool,
    scratch: Vec<u8>,
}

impl Verify {
    pub(super) fn video(&self) -> &str {
        &self.plan.video
    }
}

impl Conn {
    /// Routing found the range present: read the body to compare (after a 100 Continue if asked).
    pub(super) fn start_verify(&mut self, plan: VerifyPlan, ctx: &mut Ctx<'_>) {
        let limits = &ctx.cfg.server.limits;
        if plan.expect_continue {
            self.writer.queue(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let generation = ctx.store.get(&plan.video).map_or(0, |v| v.generation());
        self.reader
            .start_body(plan.framing, limits.max_header_bytes);
        self.deadline = ctx.now + ms(limits.body_timeout_ms);
        self.state = State::Verify(Box::new(Verify {
            cursor: plan.start,
            generation,
            differs: false,
            scratch: vec![0; VERIFY_SCRATCH],
            plan,
        }));
    }

    pub(super) fn step_verify(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let want = match self.body_payload_next(ctx) {
            Ok(Some(want)) => want,
            Ok(None) => return self.finish_verify(ctx),
            Err(step) => return step,
        };
        let State::Verify(ver) = &mut self.state else {
            return Step::Blocked;
        };
        let room = ver.plan.end - ver.cursor;
        if room == 0 {
            let len = ver.plan.end - ver.plan.start;
            let e = HttpError::new(
                413,
                format!("the body is longer than the {len} bytes of its Content-Range"),
            );
            return self.body_failed(ctx, e);
        }
        let n = usize::try_from(want.min(room))
            .unwrap_or(usize::MAX)
            .min(ver.scratch.len());
        let got = match self
            .reader
            .read_payload(&mut self.stream, &mut ver.scratch[..n])
        {
            Got::Buffered(k) => k,
            Got::Read(k) => {
                ctx.metrics.bytes_in += k as u64;
                k
            }
            Got::Blocked => return Step::Blocked,
            Got::Retry => return Step::Progress,
            Got::Closed => return Step::Close,
        };
        let k = got as u64;
        if !ver.differs {
            ver.differs = !same_as_present(ctx, ver, &ver.scratch[..got]);
        }
        ver.cursor += k;
        self.reader.body_consumed(k);
        self.deadline = ctx.now + ms(ctx.cfg.server.limits.body_timeout_ms);
        self.received_this_turn += k;
        if self.received_this_turn >= INGEST_BUDGET_PER_TURN {
            ctx.wake.push(self.token);
            return Step::Blocked;
        }
        Step::Progress
    }

    /// The body is read: 400 if it was short, 409 if it differed, else the write's 200 once what made
    /// those bytes present is committed as the sync mode promises.
    fn finish_verify(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.reader.end_body();
        let State::Verify(ver) = std::mem::replace(&mut self.state, State::Head) else {
            return Step::Blocked;
        };
        let VerifyPlan {
            video,
            start,
            end,
            keep_alive,
            ..
        } = ver.plan;
        if ver.cursor != end {
            let got = ver.cursor - start;
            let e = HttpError::new(
                400,
                format!("the body ended after {got} of {} bytes", end - start),
            );
            self.respond_error(&e, false);
            return Step::Progress;
        }
        if ver.differs {
            let e = HttpError::new(409, "the range is present with different content");
            self.respond_error(&e, keep_alive);
            return Step::Progress;
        }
        self.await_write_commit(ctx, video, start, end, keep_alive)
    }
}

/// Are `got` the bytes at the cursor, still present in the same version of the video?
fn same_as_present(ctx: &Ctx<'_>, ver: &Verify, got: &[u8]) -> bool {
    let Some(v) = ctx.store.get(&ver.plan.video) else {
        return false;
    };
    let end = ver.cursor + got.len() as u64;
    let present = matches!(v.availability(ver.cursor), Availability::Present(e) if e >= end);
    v.generation() == ver.generation
        && present
        && v.payload_slice(ver.cursor, end).is_some_and(|p| p == got)
}
