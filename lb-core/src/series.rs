//! Metric series that live only as long as something holds them: every series labelled
//! `backend`. No I/O.
//!
//! The Prometheus recorder keeps a series forever once registered, so backends that a reload
//! removed stayed in `/metrics` (and in memory) for good: three reloads adding and removing a
//! 10,000-backend pool left 180,000 dead series. [`Recorder`] wraps it and keeps the series
//! labelled `backend` itself, each as an `Arc` that the handles share and the registry holds
//! only weakly. A series goes when its last handle drops, i.e. when the backend's state (the
//! `Backend`, a listener's `Route`, a UDP flow) is gone: a backend removed by a reload
//! leaves `/metrics` as soon as no connection still uses it, and the counts of a connection
//! that outlives the reload stay true until it ends. Every other series is the Prometheus
//! recorder's, unchanged.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::formatting::sanitize_label_value;
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

/// The label that makes a series come and go with its holders.
pub const TRANSIENT_LABEL: &str = "backend";

/// Dead entries are swept when the map has grown to twice what was live at the last sweep
/// (and at least this many), so registering stays O(1) amortised and memory follows use.
const SWEEP_FLOOR: usize = 1024;

/// A `metrics` recorder: the Prometheus one, but series labelled [`TRANSIENT_LABEL`] are
/// kept by lb and forgotten when their last handle drops.
#[derive(Debug)]
pub struct Recorder {
    prometheus: PrometheusRecorder,
    transient: Arc<Transient>,
}

/// Renders `/metrics`: the Prometheus recorder's series, then the live transient ones.
#[derive(Debug, Clone)]
pub struct Exporter {
    prometheus: PrometheusHandle,
    transient: Arc<Transient>,
}

impl Recorder {
    pub fn new(prometheus: PrometheusRecorder) -> Self {
        let transient: Arc<Transient> = Arc::default();
        // Series of removed backends are forgotten before freed memory is given back (after a
        // reload), not only at the next scrape.
        let weak = Arc::downgrade(&transient);
        crate::reclaim::before_trim(Box::new(move || {
            if let Some(t) = weak.upgrade() {
                t.sweep();
            }
        }));
        Self {
            prometheus,
            transient,
        }
    }

    pub fn exporter(&self) -> Exporter {
        Exporter {
            prometheus: self.prometheus.handle(),
            transient: self.transient.clone(),
        }
    }
}

impl Exporter {
    pub fn render(&self) -> String {
        let mut out = self.prometheus.render();
        self.transient.render(&mut out);
        out
    }

    /// How many transient series are live (for tests and status).
    pub fn transient_series(&self) -> usize {
        self.transient.sweep()
    }
}

fn is_transient(key: &Key) -> bool {
    key.labels().any(|l| l.key() == TRANSIENT_LABEL)
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if is_transient(key) {
            Counter::from_arc(self.transient.cell(key, Kind::Counter))
        } else {
            self.prometheus.register_counter(key, metadata)
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if is_transient(key) {
            Gauge::from_arc(self.transient.cell(key, Kind::Gauge))
        } else {
            self.prometheus.register_gauge(key, metadata)
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        // No histogram is labelled per backend; they stay the Prometheus recorder's.
        self.prometheus.register_histogram(key, metadata)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A `u64` count.
    Counter,
    /// An `f64`'s bits (how `metrics` stores a gauge in an `AtomicU64`).
    Gauge,
}

/// The transient series: key → the value its handles share, held weakly.
#[derive(Debug, Default)]
struct Transient {
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    /// By the series as it renders, `name{label="value",…}`: one allocation of ~80 bytes a
    /// series, where a `metrics::Key` costs one per label value and its own list (a
    /// 100,000-backend pool has 600,000 series).
    cells: HashMap<Box<str>, (Kind, Weak<AtomicU64>)>,
    /// Sweep when `cells` reaches this size.
    sweep_at: usize,
}

impl Map {
    /// Drops the entries no handle holds any more; returns how many are live.
    fn sweep(&mut self) -> usize {
        self.cells.retain(|_, (_, w)| w.strong_count() > 0);
        self.cells.shrink_to(self.cells.len() * 2);
        self.sweep_at = (self.cells.len() * 2).max(SWEEP_FLOOR);
        self.cells.len()
    }
}

impl Transient {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding it leaves a map of weak pointers: carry on with it.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live value for `key`, or a new one at zero. Registering the same key again while a
    /// handle lives gives the same value, as the Prometheus recorder does.
    fn cell(&self, key: &Key, kind: Kind) -> Arc<AtomicU64> {
        let series = series_text(key).into_boxed_str();
        let mut map = self.lock();
        if map.cells.len() >= map.sweep_at {
            map.sweep();
        }
        // One lookup (hashing the text is most of a registration's cost): a live entry of
        // the same kind is shared, anything else is replaced by a new value at zero.
        let entry = map.cells.entry(series).or_insert((kind, Weak::new()));
        if entry.0 == kind {
            if let Some(cell) = entry.1.upgrade() {
                return cell;
            }
        }
        let cell = Arc::new(AtomicU64::new(match kind {
            Kind::Counter => 0,
            Kind::Gauge => 0f64.to_bits(),
        }));
        *entry = (kind, Arc::downgrade(&cell));
        cell
    }

    fn sweep(&self) -> usize {
        self.lock().sweep()
    }

    /// Appends the live series in the text exposition format, one `# TYPE` line per name.
    fn render(&self, out: &mut String) {
        let mut families: BTreeMap<String, (Kind, Vec<String>)> = BTreeMap::new();
        {
            let mut map = self.lock();
            map.sweep();
            for (series, (kind, cell)) in &map.cells {
                let Some(cell) = cell.upgrade() else { continue };
                let v = cell.load(Relaxed);
                let mut line = String::with_capacity(series.len() + 24);
                line.push_str(series);
                line.push(' ');
                let _ = match kind {
                    Kind::Counter => write!(line, "{v}"),
                    Kind::Gauge => write!(line, "{}", f64::from_bits(v)),
                };
                let name = series.split('{').next().unwrap_or(series);
                let family = families
                    .entry(name.to_string())
                    .or_insert_with(|| (*kind, Vec::new()));
                family.1.push(line);
            }
        }
        for (name, (kind, mut lines)) in families {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            lines.sort_unstable();
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
            out.push('\n');
        }
    }
}

/// `key` as it renders: `name{label="value",…}`, label values escaped.
fn series_text(key: &Key) -> String {
    let mut s = String::with_capacity(96);
    s.push_str(key.name());
    s.push('{');
    for (i, l) in key.labels().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}=\"{}\"", l.key(), sanitize_label_value(l.value()));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Recorder as _;

    fn recorder() -> Recorder {
        Recorder::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder())
    }

    fn key(name: &'static str, backend: &str) -> Key {
        Key::from_parts(
            name,
            vec![
                metrics::Label::new("pool", "p"),
                metrics::Label::new("backend", backend.to_string()),
            ],
        )
    }

    const META: Metadata<'static> = Metadata::new("t", metrics::Level::INFO, None);

    #[test]
    fn a_backend_series_lives_while_a_handle_does() {
        let r = recorder();
        let e = r.exporter();
        let up = r.register_gauge(&key("lb_backend_up", "10.0.0.1:80"), &META);
        up.set(1.0);
        let c = r.register_counter(&key("lb_connections_total", "10.0.0.1:80"), &META);
        // The same series registered again (another listener's handle) shares the value.
        let c2 = r.register_counter(&key("lb_connections_total", "10.0.0.1:80"), &META);
        c.increment(2);
        c2.increment(3);
        let text = e.render();
        assert!(
            text.contains("# TYPE lb_connections_total counter\nlb_connections_total{pool=\"p\",backend=\"10.0.0.1:80\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("lb_backend_up{pool=\"p\",backend=\"10.0.0.1:80\"} 1\n"),
            "{text}"
        );
        drop((up, c));
        assert!(
            e.render().contains("lb_connections_total{"),
            "c2 still holds it"
        );
        assert!(!e.render().contains("lb_backend_up"));
        drop(c2);
        assert!(!e.render().contains("10.0.0.1"), "{}", e.render());
        assert_eq!(e.transient_series(), 0);
    }

    #[test]
    fn other_series_stay_with_prometheus() {
        let r = recorder();
        let e = r.exporter();
        let k = Key::from_parts(
            "lb_config_reloads_total",
            vec![metrics::Label::new("result", "ok")],
        );
        r.register_counter(&k, &META).increment(1);
        assert!(e
            .render()
            .contains("lb_config_reloads_total{result=\"ok\"} 1"));
        assert_eq!(e.transient_series(), 0, "held by the Prometheus recorder");
    }

    #[test]
    fn churn_does_not_grow_the_map() {
        let r = recorder();
        let e = r.exporter();
        for round in 0..5 {
            let held: Vec<Counter> = (0..3000)
                .map(|i| {
                    r.register_counter(
                        &key("lb_connect_errors_total", &format!("r{round}-{i}")),
                        &META,
                    )
                })
                .collect();
            assert_eq!(e.transient_series(), 3000);
            drop(held);
        }
        let map = r.transient.lock();
        assert!(
            map.cells.len() <= 3000,
            "dead entries are swept as new ones come: {}",
            map.cells.len()
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let r = recorder();
        let g = r.register_gauge(&key("lb_backend_up", "a\"b\\c\nd"), &META);
        g.set(0.0);
        assert!(r.exporter().render().contains(r#"backend="a\"b\\c\nd"} 0"#));
    }
}
