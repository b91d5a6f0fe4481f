//! Logging (tracing to stderr, text or JSON, filtered by RUST_LOG) and the Prometheus recorder.

use clap::ValueEnum;
use lb_core::series;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Installs the global metrics recorder (Prometheus, with per-backend series kept by
/// [`series::Recorder`] so they go with their backends); its exporter renders `/metrics`.
pub fn install_metrics() -> Option<series::Exporter> {
    // Durations are histograms (SPEC §3), with buckets from 0.5 ms to 60 s: what HTTP
    // requests and TLS handshakes through a proxy take.
    const SECONDS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), SECONDS);
    let recorder = match builder {
        Ok(b) => b.build_recorder(),
        Err(e) => {
            tracing::warn!(error = %e, "histogram buckets refused; durations render as summaries");
            PrometheusBuilder::new().build_recorder()
        }
    };
    let recorder = series::Recorder::new(recorder);
    let handle = recorder.exporter();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder already installed; /metrics will be empty");
            None
        }
    }
}
