//! `--metrics ADDR`: counters and histograms of finished connections and of the run,
//! kept in a `prometheus-client` registry and served as OpenMetrics text at `/metrics`
//! ([`http`]). The metric list is in `docs/metrics.md`.
//!
//! The renderer (`pipeline::Renderer`) calls [`Metrics::connection`] for every finished
//! connection, [`Metrics::lost`] / [`Metrics::skipped`] where the live loop reports the
//! kernel's counters, and [`Metrics::unplaced`] with the correlator's counts. Updating
//! is cheap: the label set is built on the stack (container ids are interned, so a
//! known one is an `Arc` clone), and `Family::get_or_create` allocates only the first
//! time it sees a label set.
pub mod http;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cli::MetricsLabel;
use crate::correlate::{Connection, Role};
use crate::decode::Comm;
use crate::render::summary::Unplaced;

/// Every metric name starts with this (`tcp_trace_connections_total` …).
pub const PREFIX: &str = "tcp_trace";

/// Histogram buckets: 50 µs × 2^k, k = 0..=19 (the last finite bound is 26.2 s).
pub const BUCKET_START_S: f64 = 50e-6;
pub const BUCKET_COUNT: u16 = 20;

/// Container ids interned at most; past it the table starts over (a host running more
/// containers than this has a cardinality problem of its own).
const MAX_INTERNED: usize = 4096;

/// Which optional labels to add (`--metrics-labels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtraLabels {
    /// `remote`: the remote IP address (no port).
    pub remote: bool,
    /// `comm`: the owner's command name.
    pub comm: bool,
}

impl ExtraLabels {
    pub fn from_cli(list: &[MetricsLabel]) -> ExtraLabels {
        ExtraLabels {
            remote: list.contains(&MetricsLabel::Remote),
            comm: list.contains(&MetricsLabel::Comm),
        }
    }
}

/// The labels of every per-connection metric. `kind` is the one label that tells the
/// series of a family apart beyond the connection (`outcome`, retransmit `kind`,
/// reset `direction`), absent on the histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ConnLabels {
    pub role: &'static str,
    pub kind: Option<(&'static str, &'static str)>,
    /// The server's listening port: sport for servers and listeners, dport for
    /// clients, none for a socket of unknown role (encoded as "").
    pub port: Option<u16>,
    /// "" on the host (or when not resolved).
    pub container_id: Option<Arc<str>>,
    /// Kubernetes: the pod's name (its UID when the name is not known) and namespace.
    /// Written only when known: Prometheus treats an empty label as an absent one, so
    /// host series keep the labels they had.
    pub pod: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
    /// Only with `--metrics-labels remote` (then "" when unknown).
    pub remote: Option<Option<IpAddr>>,
    /// Only with `--metrics-labels comm` (then "" when unknown).
    pub comm: Option<Option<Comm>>,
}

/// A label value written with `Display`, escaped by the encoder.
struct Shown<T>(T);

impl<T: std::fmt::Display> EncodeLabelValue for Shown<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{}", self.0)
    }
}

impl EncodeLabelSet for ConnLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("role", self.role).encode(encoder.encode_label())?;
        if let Some((k, v)) = self.kind {
            (k, v).encode(encoder.encode_label())?;
        }
        ("port", self.port).encode(encoder.encode_label())?;
        let ctr: &str = self.container_id.as_deref().unwrap_or("");
        ("container_id", ctr).encode(encoder.encode_label())?;
        if let Some(pod) = self.pod.as_deref() {
            ("pod", pod).encode(encoder.encode_label())?;
        }
        if let Some(ns) = self.namespace.as_deref() {
            ("namespace", ns).encode(encoder.encode_label())?;
        }
        if let Some(remote) = self.remote {
            ("remote", remote.map(Shown)).encode(encoder.encode_label())?;
        }
        if let Some(comm) = self.comm {
            ("comm", comm.map(Shown)).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// `reason` of `tcp_trace_unplaced_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl EncodeLabelSet for ReasonLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

const UNPLACED_REASONS: [&str; 4] = ["orphan", "late", "superseded", "untracked_request"];

/// Makes the histograms of a family (all with the same buckets).
#[derive(Clone, Copy, Debug)]
pub struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(BUCKET_START_S, 2.0, BUCKET_COUNT))
    }
}

type Hist = Family<ConnLabels, Histogram, Buckets>;

/// The metrics of one run (the registry is shared with the HTTP responder).
pub struct Metrics {
    registry: Arc<Registry>,
    extra: ExtraLabels,
    connections: Family<ConnLabels, Counter>,
    handshake: Hist,
    connect: Hist,
    accept_wait: Hist,
    retransmits: Family<ConnLabels, Counter>,
    resets: Family<ConnLabels, Counter>,
    time_wait: Family<ConnLabels, Counter>,
    lost: Counter,
    skipped: Counter,
    unplaced: Family<ReasonLabel, Counter>,
    unplaced_seen: Unplaced,
    containers: HashMap<Box<str>, Arc<str>>,
}

impl Metrics {
    pub fn new(extra: ExtraLabels) -> Metrics {
        let mut r = Registry::with_prefix(PREFIX);
        let connections = Family::<ConnLabels, Counter>::default();
        r.register(
            "connections",
            "Finished connections (one per socket generation) by role and outcome",
            connections.clone(),
        );
        let handshake = Hist::new_with_constructor(Buckets);
        r.register_with_unit(
            "handshake_duration",
            "Client: SYN_SENT to ESTABLISHED; server: SYN_RECV to ESTABLISHED",
            Unit::Seconds,
            handshake.clone(),
        );
        let connect = Hist::new_with_constructor(Buckets);
        r.register_with_unit(
            "connect_duration",
            "Client: how long connecting took (blocking connect(): its return minus SYN_SENT; non-blocking: ESTABLISHED or the failure minus SYN_SENT)",
            Unit::Seconds,
            connect.clone(),
        );
        let accept_wait = Hist::new_with_constructor(Buckets);
        r.register_with_unit(
            "accept_queue_wait",
            "Server: accept() return minus ESTABLISHED (time in the accept queue)",
            Unit::Seconds,
            accept_wait.clone(),
        );
        let retransmits = Family::<ConnLabels, Counter>::default();
        r.register(
            "retransmits",
            "Retransmissions by kind: syn (client in SYN_SENT), synack (server's request, or a listener's half-open requests), data (any other state, FIN included)",
            retransmits.clone(),
        );
        let resets = Family::<ConnLabels, Counter>::default();
        r.register(
            "resets",
            "Resets by direction (sent, received)",
            resets.clone(),
        );
        let time_wait = Family::<ConnLabels, Counter>::default();
        r.register(
            "time_wait_entries",
            "Connections whose socket entered TIME_WAIT",
            time_wait.clone(),
        );
        let lost = Counter::default();
        r.register(
            "lost_events",
            "Events the kernel could not queue (ring buffer full)",
            lost.clone(),
        );
        let skipped = Counter::default();
        r.register(
            "skipped_hook_runs",
            "Hook runs the kernel skipped (the program already running on that CPU): up to one event each missing",
            skipped.clone(),
        );
        let unplaced = Family::<ReasonLabel, Counter>::default();
        // Every reason has a series from the start (0 until something is unplaced).
        for reason in UNPLACED_REASONS {
            let _ = unplaced.get_or_create(&ReasonLabel { reason });
        }
        r.register(
            "unplaced_events",
            "Events the correlator could not place, by reason (orphan, late, superseded, untracked_request)",
            unplaced.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            extra,
            connections,
            handshake,
            connect,
            accept_wait,
            retransmits,
            resets,
            time_wait,
            lost,
            skipped,
            unplaced,
            unplaced_seen: Unplaced::default(),
            containers: HashMap::new(),
        }
    }

    /// The registry, for the HTTP responder.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// An interned label value.
    fn intern(&mut self, v: &str) -> Arc<str> {
        if let Some(a) = self.containers.get(v) {
            return Arc::clone(a);
        }
        if self.containers.len() >= MAX_INTERNED {
            self.containers.clear();
        }
        let a: Arc<str> = Arc::from(v);
        self.containers.insert(v.into(), Arc::clone(&a));
        a
    }

    /// The labels of `c` (without `kind`).
    fn labels(&mut self, c: &Connection) -> ConnLabels {
        let port = match c.role {
            Role::Server | Role::Listener => Some(c.sport),
            Role::Client => Some(c.dport),
            Role::Unknown => None,
        };
        let container_id = c.container_id.as_deref().map(|id| {
            if let Some(a) = self.containers.get(id) {
                return Arc::clone(a);
            }
            if self.containers.len() >= MAX_INTERNED {
                self.containers.clear();
            }
            let a: Arc<str> = Arc::from(id);
            self.containers.insert(id.into(), Arc::clone(&a));
            a
        });
        ConnLabels {
            role: c.role.name(),
            kind: None,
            port,
            container_id,
            pod: None,
            namespace: None,
            remote: self.extra.remote.then_some(c.daddr),
            comm: self.extra.comm.then_some(c.comm),
        }
    }

    /// A finished connection (not in a pod, or its pod unknown).
    pub fn connection(&mut self, c: &Connection) {
        self.connection_in_pod(c, None, None);
    }

    /// A finished connection of a Kubernetes pod: `namespace` and `pod` (its name, or
    /// UID when the name is unknown) become the `namespace` and `pod` labels.
    pub fn connection_in_pod(
        &mut self,
        c: &Connection,
        namespace: Option<&str>,
        pod: Option<&str>,
    ) {
        let mut l = self.labels(c);
        l.pod = pod.filter(|p| !p.is_empty()).map(|p| self.intern(p));
        l.namespace = namespace.filter(|n| !n.is_empty()).map(|n| self.intern(n));
        if let Some(ns) = c.handshake_ns {
            self.handshake.get_or_create(&l).observe(secs(ns));
        }
        if c.role == Role::Client
            && let Some(ns) = c.connect_latency_ns
        {
            self.connect.get_or_create(&l).observe(secs(ns));
        }
        if c.role == Role::Server
            && let Some(ns) = c.accept_wait_ns
        {
            self.accept_wait
                .get_or_create(&l)
                .observe(secs(ns.max(0) as u64));
        }
        l.kind = Some(("outcome", c.outcome.name()));
        self.connections.get_or_create(&l).inc();
        for (kind, n) in [
            ("syn", c.syn_retransmits),
            ("synack", c.synack_retransmits),
            ("data", c.retransmits),
        ] {
            if n > 0 {
                l.kind = Some(("kind", kind));
                self.retransmits.get_or_create(&l).inc_by(n.into());
            }
        }
        for (dir, n) in [("sent", c.resets_sent), ("received", c.resets_received)] {
            if n > 0 {
                l.kind = Some(("direction", dir));
                self.resets.get_or_create(&l).inc_by(n.into());
            }
        }
        if c.time_wait {
            l.kind = None;
            self.time_wait.get_or_create(&l).inc();
        }
    }

    /// `count` more events lost (ring buffer full).
    pub fn lost(&self, count: u64) {
        self.lost.inc_by(count);
    }

    /// `count` more hook runs skipped by the kernel.
    pub fn skipped(&self, count: u64) {
        self.skipped.inc_by(count);
    }

    /// The correlator's unplaced counts so far (totals since the start).
    pub fn unplaced(&mut self, now: Unplaced) {
        let was = self.unplaced_seen;
        for (reason, now, was) in [
            ("orphan", now.orphan_events, was.orphan_events),
            ("late", now.late_events, was.late_events),
            ("superseded", now.superseded, was.superseded),
            (
                "untracked_request",
                now.untracked_requests,
                was.untracked_requests,
            ),
        ] {
            if now > was {
                self.unplaced
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(now - was);
            }
        }
        self.unplaced_seen = now;
    }

    /// The OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// The OpenMetrics text of `registry` (ends with `# EOF`).
pub fn encode(registry: &Registry) -> String {
    let mut s = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    s
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pod_label_tests {
    use super::*;
    use crate::correlate::{Connection, Outcome, Role};
    use crate::decode::Family;

    /// `pod` and `namespace` follow `container_id` when known and are absent otherwise
    /// (an empty label is an absent one to Prometheus).
    #[test]
    fn pod_and_namespace_labels() {
        let mut m = Metrics::new(ExtraLabels::default());
        let mut c = Connection::new(1, Role::Client, 0x1000, Family::Inet, 1);
        c.dport = 8080;
        c.outcome = Outcome::Closed;
        c.container_id = Some("0123456789ab".into());
        m.connection_in_pod(&c, Some("shop"), Some("web-0"));
        m.connection_in_pod(&c, None, Some("5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f"));
        m.connection_in_pod(&c, Some(""), Some(""));
        m.connection(&c);
        let t = m.encode();
        let series = |labels: &str| format!("tcp_trace_connections_total{{{labels}}} ");
        let base = r#"role="client",outcome="closed",port="8080",container_id="0123456789ab""#;
        assert!(
            t.contains(&(series(&format!(r#"{base},pod="web-0",namespace="shop""#)) + "1\n")),
            "{t}"
        );
        assert!(
            t.contains(
                &(series(&format!(
                    r#"{base},pod="5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f""#
                )) + "1\n")
            ),
            "{t}"
        );
        // Empty values are not written: the same series as a connection outside pods.
        assert!(t.contains(&(series(base) + "2\n")), "{t}");
    }
}
