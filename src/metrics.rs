//! Counters the event loop keeps, rendered in the Prometheus text exposition format for `GET /metrics`.

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
}

impl Metrics {
    /// The exposition text; `open_connections` and per-video figures come from the loop.
    pub fn render(&self, open_connections: usize, videos: &[(String, u64, u64)]) -> String {
        let mut s = String::new();
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
                "vcache_fast_records_total",
                "Process-crash metadata records written.",
                self.fast_records,
            ),
        ];
        for (name, help, value) in counters {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        s.push_str("# HELP vcache_open_connections Client connections open now.\n# TYPE vcache_open_connections gauge\n");
        s.push_str(&format!("vcache_open_connections {open_connections}\n"));
        s.push_str("# HELP vcache_video_size_bytes Size of each video.\n# TYPE vcache_video_size_bytes gauge\n");
        for (id, size, _) in videos {
            s.push_str(&format!(
                "vcache_video_size_bytes{{id=\"{}\"}} {size}\n",
                escape_label(id)
            ));
        }
        s.push_str("# HELP vcache_video_present_bytes Bytes of each video held in the cache.\n# TYPE vcache_video_present_bytes gauge\n");
        for (id, _, present) in videos {
            s.push_str(&format!(
                "vcache_video_present_bytes{{id=\"{}\"}} {present}\n",
                escape_label(id)
            ));
        }
        s
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
        let text = m.render(3, &[("a".into(), 10, 4)]);
        assert!(text.contains("vcache_requests_total 7\n"));
        assert!(text.contains("vcache_open_connections 3\n"));
        assert!(text.contains("vcache_video_present_bytes{id=\"a\"} 4\n"));
        assert!(text.contains("# TYPE vcache_requests_total counter\n"));
    }
}
