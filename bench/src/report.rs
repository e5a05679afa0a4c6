//! The results table (markdown + JSON), with Canopy/peer ratios.

use serde_json::json;

/// One peer's figures for one load.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) peer: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) samples: u64,
    pub(crate) secs: f64,
    /// Acknowledgement time of a write request (p50, p99), in ms.
    pub(crate) ack_ms: Option<(f64, f64)>,
    pub(crate) bytes: u64,
    pub(crate) peak_rss: u64,
}

impl Figures {
    pub(crate) fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.secs
    }
    pub(crate) fn bytes_per_sample(&self) -> f64 {
        self.bytes as f64 / self.samples as f64
    }
}

/// The markdown table: absolute figures per peer and Canopy / VictoriaMetrics ratios.
pub(crate) fn markdown(figs: &[Figures]) -> String {
    let mut s =
        String::from("| load | peer | samples/s | ack p50 / p99 (ms) | bytes/sample | peak RSS (MB) |\n|---|---|---|---|---|---|\n");
    for f in figs {
        let acks = f.ack_ms.map_or("—".to_string(), |(p50, p99)| format!("{p50:.1} / {p99:.1}"));
        s.push_str(&format!(
            "| {} | {} | {:.0} | {acks} | {:.3} | {:.0} |\n",
            f.protocol,
            f.peer,
            f.samples_per_sec(),
            f.bytes_per_sample(),
            f.peak_rss as f64 / 1e6
        ));
    }
    s.push_str(
        "\n| load | ingest ratio (Canopy / VM, higher is better) | storage ratio (lower is better) | memory ratio |\n|---|---|---|---|\n",
    );
    let protocols: Vec<&str> = {
        let mut p: Vec<&str> = figs.iter().map(|f| f.protocol).collect();
        p.dedup();
        p
    };
    for p in protocols {
        let c = figs.iter().find(|f| f.protocol == p && f.peer == "canopy");
        let v = figs.iter().find(|f| f.protocol == p && f.peer == "victoria-metrics");
        if let (Some(c), Some(v)) = (c, v) {
            s.push_str(&format!(
                "| {p} | {:.2} | {:.2} | {:.2} |\n",
                c.samples_per_sec() / v.samples_per_sec(),
                c.bytes_per_sample() / v.bytes_per_sample(),
                c.peak_rss as f64 / v.peak_rss.max(1) as f64
            ));
        }
    }
    s
}

/// The same figures as JSON.
pub(crate) fn json(figs: &[Figures]) -> serde_json::Value {
    json!(
        figs.iter()
            .map(|f| json!({
                "peer": f.peer,
                "load": f.protocol,
                "samples": f.samples,
                "seconds": f.secs,
                "samples_per_sec": f.samples_per_sec(),
                "ack_p50_ms": f.ack_ms.map(|a| a.0),
                "ack_p99_ms": f.ack_ms.map(|a| a.1),
                "bytes": f.bytes,
                "bytes_per_sample": f.bytes_per_sample(),
                "peak_rss_bytes": f.peak_rss,
            }))
            .collect::<Vec<_>>()
    )
}
