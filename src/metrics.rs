//! Counters the event loop keeps, rendered in the Prometheus text exposition format for `GET /metrics`.

mod process;

/// Plain counters, owned by the event-loop thread.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub requests: u64,
    pub bad_requests: u64,
    pub timeouts: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub payload_bytes_out: u64,
    pub bytes_ingested: u64,
    pub commits: u64,
    pub commit_failures: u64,
    pub fast_records: u64,
    pub followers_dropped: u64,
    /// From a live byte's claim to the write that sends it to a follower.
    pub follower_delay: Histogram,
    /// Responses by status code (a bounded set: the codes vcache sends).
    pub responses: std::collections::BTreeMap<u16, u64>,
    /// From a request head's arrival to its response's last byte (streams included).
    pub request_duration: Histogram,
    /// From a durable commit's submission to its result.
    pub commit_duration: Histogram,
    /// Origin-video responses by cache status: HIT, MISS, PARTIAL (the `X-Cache` they carried).
    pub cache_responses: [u64; 3],
    /// Gauge: age of the oldest acknowledged write no durable record covers yet, in seconds
    /// (refreshed by the event loop).
    pub oldest_unsynced_ack_seconds: f64,
}

/// Per-video series (`vcache_video_*_bytes{id}`) are written for at most this many videos (the first
/// by id); the totals cover every video, so a large catalogue does not grow the scrape without bound.
pub const MAX_VIDEO_SERIES: usize = 100;

/// What the loop knows at scrape time besides the counters.
#[derive(Debug, Default)]
pub struct Gauges<'a> {
    pub open_connections: usize,
    /// (id, size, present bytes) of every configured video.
    pub videos: &'a [(String, u64, u64)],
    /// (id, reason) of every configured video that cannot be served.
    pub unavailable: &'a [(&'a str, &'a str)],
    pub live_publishers: u64,
    pub live_followers: u64,
    /// Origin fetches since start.
    pub origin: crate::store::OriginTotals,
    /// The disk budget of origin content: (allocated bytes, max_size or None, evicted bytes total,
    /// evicted blocks total).
    pub cache_space: (u64, Option<u64>, u64, u64),
}

/// Upper bounds of the latency histogram buckets, in microseconds (the last bucket is +Inf).
const BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A latency histogram with fixed buckets, rendered as a Prometheus histogram in seconds.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: [u64; BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |&us| format!("{}", us as f64 / 1e6));
            s.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        s.push_str(&format!(
            "{name}_sum {}\n{name}_count {cumulative}\n",
            self.sum_us as f64 / 1e6
        ));
    }
}

impl Metrics {
    /// The exposition text; `open_connections` and per-video figures come from the loop.
    /// One response finished (or was cut) with `status`, `elapsed` after its head arrived.
    pub fn response(&mut self, status: u16, elapsed: std::time::Duration) {
        *self.responses.entry(status).or_insert(0) += 1;
        self.request_duration.observe(elapsed);
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges<'_>) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "# HELP vcache_build_info The running version (always 1).\n# TYPE vcache_build_info gauge\n\
             vcache_build_info{{version=\"{}\"}} 1\n",
            escape_label(env!("CARGO_PKG_VERSION"))
        ));
        self.render_counters(&mut s);
        s.push_str("# HELP vcache_responses_total Responses by status code.\n# TYPE vcache_responses_total counter\n");
        for (code, n) in &self.responses {
            s.push_str(&format!("vcache_responses_total{{code=\"{code}\"}} {n}\n"));
        }
        self.request_duration.render(
            &mut s,
            "vcache_request_duration_seconds",
            "From a request head's arrival to the last byte of its response (live streams land in +Inf).",
        );
        self.commit_duration.render(
            &mut s,
            "vcache_commit_duration_seconds",
            "From a durable commit's submission to the commit worker to its result (data and metadata synced).",
        );
        self.follower_delay.render(
            &mut s,
            "vcache_follower_delay_seconds",
            "From a live byte's claim (its arrival from the publisher) to the write that sends it to a follower.",
        );
        s.push_str(&format!(
            "# HELP vcache_oldest_unsynced_ack_seconds Age of the oldest acknowledged write that is \
             not durable yet (sync = interval: durable after the next completed checkpoint).\n\
             # TYPE vcache_oldest_unsynced_ack_seconds gauge\n\
             vcache_oldest_unsynced_ack_seconds {:.3}\n",
            self.oldest_unsynced_ack_seconds
        ));
        self.render_origin(&mut s, g);
        render_gauges(&mut s, g);
        crate::metrics::process::render(&mut s);
        s
    }

    fn render_counters(&self, s: &mut String) {
        let counters: [(&str, &str, u64); 13] = [
            (
                "vcache_connections_accepted_total",
                "Connections accepted.",
                self.connections_accepted,
            ),
            (
                "vcache_connections_refused_total",
                "Connections refused at limits.max_connections.",
                self.connections_refused,
            ),
            (
                "vcache_requests_total",
                "Request heads parsed.",
                self.requests,
            ),
            (
                "vcache_bad_requests_total",
                "Request heads refused as malformed.",
                self.bad_requests,
            ),
            (
                "vcache_timeouts_total",
                "Connections closed by a timeout.",
                self.timeouts,
            ),
            (
                "vcache_received_bytes_total",
                "Bytes read from client sockets.",
                self.bytes_in,
            ),
            (
                "vcache_sent_bytes_total",
                "Bytes written to client sockets.",
                self.bytes_out,
            ),
            (
                "vcache_payload_sent_bytes_total",
                "Video bytes sent from mappings or by sendfile.",
                self.payload_bytes_out,
            ),
            (
                "vcache_ingested_bytes_total",
                "Video bytes written into mappings.",
                self.bytes_ingested,
            ),
            (
                "vcache_commits_total",
                "Durable metadata commits.",
                self.commits,
            ),
            (
                "vcache_commit_failures_total",
                "Durable metadata commits that failed.",
                self.commit_failures,
            ),
            (
                "vcache_followers_dropped_total",
                "Live followers closed for falling behind the window.",
                self.followers_dropped,
            ),
            (
                "vcache_unsynced_metadata_records_total",
                "Metadata records written without a sync: they make writes survive a process crash at once; a machine crash falls back to the last synced commit.",
                self.fast_records,
            ),
        ];
        for (name, help, value) in counters {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
    }
}

fn counter(s: &mut String, name: &str, help: &str, value: u64) {
    s.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    ));
}

fn gauge(s: &mut String, name: &str, help: &str, value: u64) {
    s.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    ));
}

/// The `X-Cache` values counted in `vcache_cache_responses_total`.
const CACHE_STATUSES: [&str; 3] = ["HIT", "MISS", "PARTIAL"];

impl Metrics {
    /// Count an origin-video response by its `X-Cache` status (other responses carry none).
    pub fn note_cache_status(&mut self, status: Option<&str>) {
        if let Some(i) = status.and_then(|st| CACHE_STATUSES.iter().position(|&c| c == st)) {
            self.cache_responses[i] += 1;
        }
    }

    fn render_origin(&self, s: &mut String, g: &Gauges<'_>) {
        let o = g.origin;
        for (name, help, value) in [
            (
                "vcache_origin_fetches_total",
                "Origin block fetches whose body arrived whole.",
                o.fetches,
            ),
            (
                "vcache_origin_fetch_failures_total",
                "Origin block fetches that failed (refused, reset, 5xx, malformed, short, timed out).",
                o.failures,
            ),
            (
                "vcache_origin_fetched_bytes_total",
                "Body bytes read from origins into the cache.",
                o.bytes,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        s.push_str(
            "# HELP vcache_cache_responses_total Origin-video responses by cache status (the X-Cache they \
             carried): the hit ratio is hit / the sum.\n# TYPE vcache_cache_responses_total counter\n",
        );
        for (status, n) in CACHE_STATUSES.iter().zip(self.cache_responses) {
            let label = status.to_ascii_lowercase();
            s.push_str(&format!(
                "vcache_cache_responses_total{{status=\"{label}\"}} {n}\n"
            ));
        }
    }
}

fn render_gauges(s: &mut String, g: &Gauges<'_>) {
    gauge(
        s,
        "vcache_open_connections",
        "Client connections open now.",
        g.open_connections as u64,
    );
    gauge(
        s,
        "vcache_live_publishers",
        "Live channels with a publisher now.",
        g.live_publishers,
    );
    gauge(
        s,
        "vcache_live_followers",
        "Live followers connected now (all channels).",
        g.live_followers,
    );
    gauge(
        s,
        "vcache_videos",
        "Configured videos that are served.",
        g.videos.len() as u64,
    );
    gauge(
        s,
        "vcache_cache_size_bytes",
        "Bytes of every served video (their sizes; live channels: their ring capacity).",
        g.videos.iter().map(|v| v.1).sum(),
    );
    gauge(
        s,
        "vcache_cache_present_bytes",
        "Bytes of every served video held in the cache now.",
        g.videos.iter().map(|v| v.2).sum(),
    );
    let (allocated, max_size, evicted_bytes, evicted_blocks) = g.cache_space;
    gauge(
        s,
        "vcache_cache_allocated_bytes",
        "Bytes origin content occupies on disk (allocated fill blocks, counted against [cache] max_size).",
        allocated,
    );
    if let Some(max) = max_size {
        gauge(
            s,
            "vcache_cache_max_size_bytes",
            "The disk budget of origin content ([cache] max_size).",
            max,
        );
    }
    counter(
        s,
        "vcache_cache_evicted_bytes_total",
        "Bytes of origin content evicted (punched out of their data files) since start.",
        evicted_bytes,
    );
    counter(
        s,
        "vcache_cache_evicted_blocks_total",
        "Origin fill blocks evicted since start.",
        evicted_blocks,
    );
    let shown = &g.videos[..g.videos.len().min(MAX_VIDEO_SERIES)];
    s.push_str("# HELP vcache_video_size_bytes Size of each video (the first 100 by id; see vcache_cache_size_bytes).\n# TYPE vcache_video_size_bytes gauge\n");
    for (id, size, _) in shown {
        s.push_str(&format!(
            "vcache_video_size_bytes{{id=\"{}\"}} {size}\n",
            escape_label(id)
        ));
    }
    s.push_str("# HELP vcache_video_present_bytes Bytes of each video held in the cache (the first 100 by id).\n# TYPE vcache_video_present_bytes gauge\n");
    for (id, _, present) in shown {
        s.push_str(&format!(
            "vcache_video_present_bytes{{id=\"{}\"}} {present}\n",
            escape_label(id)
        ));
    }
    s.push_str(
        "# HELP vcache_video_unavailable A configured video that cannot be served now (1), with why: \
         locked (an old process still holds its files), opening, open_failed. Only unavailable \
         videos are listed.\n# TYPE vcache_video_unavailable gauge\n",
    );
    for (id, reason) in g.unavailable {
        s.push_str(&format!(
            "vcache_video_unavailable{{id=\"{}\",reason=\"{}\"}} 1\n",
            escape_label(id),
            escape_label(reason)
        ));
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics {
            requests: 7,
            ..Metrics::default()
        };
        let videos = [("a".into(), 10, 4)];
        let text = m.render(&Gauges {
            open_connections: 3,
            videos: &videos,
            unavailable: &[("b", "locked")],
            ..Gauges::default()
        });
        assert!(text.contains("vcache_requests_total 7\n"));
        assert!(text.contains("vcache_open_connections 3\n"));
        assert!(text.contains("vcache_video_present_bytes{id=\"a\"} 4\n"));
        assert!(text.contains("# TYPE vcache_requests_total counter\n"));
        assert!(text.contains("vcache_video_unavailable{id=\"b\",reason=\"locked\"} 1\n"));
        assert!(text.contains("vcache_oldest_unsynced_ack_seconds 0.000\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_in_seconds() {
        let mut m = Metrics::default();
        for us in [50, 100, 101, 3_000, 9_000_000] {
            m.follower_delay
                .observe(std::time::Duration::from_micros(us));
        }
        let text = m.render(&Gauges::default());
        let name = "vcache_follower_delay_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")));
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.0001\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.00025\"}} 3\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.005\"}} 4\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"2.5\"}} 4\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 5\n")));
        assert!(text.contains(&format!("{name}_count 5\n")));
        assert!(text.contains(&format!("{name}_sum 9.003251\n")));
    }
}
