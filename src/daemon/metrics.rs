//! The Prometheus endpoint of either daemon: `GET /metrics` on `metrics-listen`, in the
//! text format of `prometheus-client`, served on a thread of its own by the bounded server
//! of `daemon::http` (a fixed number of connections, a capped request head, a deadline).
//! The thread never ends; if it did, the loop's `check` would end the daemon, as for its
//! other workers.
//!
//! The daemon's loop owns its state, so the endpoint never reads it: the loop puts a copy
//! of what it would show in `banshare status` into a `Snapshot` once a second, and the
//! registry's collector turns the latest copy into metrics at each scrape. Histograms are
//! prometheus-client's own, shared with the threads that observe them.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::daemon::http::{self, Request, Response};
use crate::daemon::worker::{self, Worker};
use crate::exit::{Exit, Failure};

/// How often the loop copies its state for the endpoint.
const REFRESH: Duration = Duration::from_secs(1);
/// What prometheus-client writes, for scrapers that ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for everything else (`classic`).
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The latest copy of a daemon's state, written by its loop and read at each scrape.
#[derive(Debug)]
struct Snapshot<T> {
    latest: Mutex<Option<T>>,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot {
            latest: Mutex::new(None),
        }
    }
}

impl<T: Clone> Snapshot<T> {
    fn put(&self, state: T) {
        *self.latest.lock().expect("lock") = Some(state);
    }

    fn get(&self) -> Option<T> {
        self.latest.lock().expect("lock").clone()
    }
}

/// A running endpoint, as the daemon's loop holds it.
pub struct Endpoint<T> {
    snapshot: Arc<Snapshot<T>>,
    next_refresh: Instant,
    worker: Worker,
}

impl<T: Describe> Endpoint<T> {
    /// Serves metrics under `prefix` on `address` until the process ends; `register` adds
    /// the caller's own metrics (histograms). A failure to bind is the daemon's failure,
    /// at start: an operator who asked for metrics must not go without them unawares.
    pub fn start(
        prefix: &str,
        address: SocketAddr,
        register: impl FnOnce(&mut Registry),
    ) -> Result<Endpoint<T>, Failure> {
        let snapshot = Arc::new(Snapshot::default());
        let mut registry = Registry::with_prefix(prefix);
        registry.register_collector(Box::new(FromSnapshot(Arc::clone(&snapshot))));
        register(&mut registry);
        let worker = serve(address, registry)?;
        Ok(Endpoint {
            snapshot,
            next_refresh: Instant::now(),
            worker,
        })
    }

    /// An error if the endpoint's thread has ended, which the daemon ends on: an operator
    /// who asked for metrics must not go without them unawares.
    pub fn check(&self) -> Result<(), Failure> {
        self.worker.check()
    }

    /// Whether the loop should copy its state now (`put`): once every REFRESH.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next_refresh {
            return false;
        }
        self.next_refresh = now + REFRESH;
        true
    }

    pub fn put(&self, state: T) {
        self.snapshot.put(state);
    }
}

/// Turns a daemon's state into metrics: implemented by each side (`server::metrics`,
/// `client::metrics`).
pub trait Describe: Clone + std::fmt::Debug + Send + Sync + 'static {
    fn describe(&self, out: &mut Out<'_>) -> Result<(), std::fmt::Error>;
}

/// Writes counters and gauges, with or without one label.
pub struct Out<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Out<'_> {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        let metric = ConstCounter::new(value);
        metric.encode(
            self.encoder
                .encode_descriptor(name, help, None, metric.metric_type())?,
        )
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        let metric = ConstGauge::new(value);
        metric.encode(
            self.encoder
                .encode_descriptor(name, help, None, metric.metric_type())?,
        )
    }

    /// A counter family: one value per `label` value.
    pub fn counters<'v>(
        &mut self,
        (name, help, label): (&str, &str, &str),
        values: impl IntoIterator<Item = (&'v str, u64)>,
    ) -> std::fmt::Result {
        let labelled = values.into_iter().map(|(v, n)| (vec![(label, v)], n));
        self.labelled_counters((name, help), labelled)
    }

    /// A counter family with several labels to each value.
    pub fn labelled_counters<'l>(
        &mut self,
        (name, help): (&str, &str),
        values: impl IntoIterator<Item = (Vec<(&'l str, &'l str)>, u64)>,
    ) -> std::fmt::Result {
        let kind = ConstCounter::new(0u64).metric_type();
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, count) in values {
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family: one value per `label` value.
    pub fn gauges<'v>(
        &mut self,
        (name, help, label): (&str, &str, &str),
        values: impl IntoIterator<Item = (&'v str, f64)>,
    ) -> std::fmt::Result {
        let kind = ConstGauge::new(0.0).metric_type();
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (value, level) in values {
            let labels = [(label, value)];
            ConstGauge::new(level).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FromSnapshot<T>(Arc<Snapshot<T>>);

impl<T: Describe> Collector for FromSnapshot<T> {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(state) => state.describe(&mut Out { encoder }),
            // Before the loop's first copy: nothing yet, rather than zeros.
            None => Ok(()),
        }
    }
}

/// A histogram of durations in seconds, from 0.1 ms to about 26 s.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Serves `registry` on `address` from a thread of its own, the endpoint's only one.
fn serve(address: SocketAddr, registry: Registry) -> Result<Worker, Failure> {
    let unavailable =
        |e: std::io::Error| Exit::Unavailable.with(format!("metrics-listen {address}: {e}"));
    let listener = TcpListener::bind(address).map_err(unavailable)?;
    let server = http::Server::new(listener, move |request| answer(request, &registry))
        .map_err(unavailable)?;
    let worker = Worker::spawn("metrics", move || {
        // For tests of the daemons' checks (tests/metrics.rs).
        if worker::fault("metrics-exits") {
            return;
        }
        server.run()
    })
    .map_err(|e| Exit::Software.with(format!("cannot start the metrics thread: {e}")))?;
    log::info!("serving Prometheus metrics on http://{address}/metrics");
    Ok(worker)
}

/// `GET /metrics` gets the metrics, as OpenMetrics when the scraper accepts it and in the
/// classic format otherwise; anything else a 404 or 405.
fn answer(request: &Request, registry: &Registry) -> Response {
    match (request.method, request.path()) {
        ("GET", "/metrics") => {
            let openmetrics = request
                .headers("accept")
                .any(|v| String::from_utf8_lossy(v).contains("application/openmetrics-text"));
            scrape(registry, openmetrics)
        }
        (_, "/metrics") => Response::text(405, "GET only\n"),
        _ => Response::text(404, "see /metrics\n"),
    }
}

fn scrape(registry: &Registry, openmetrics: bool) -> Response {
    let started = Instant::now();
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return Response::text(500, &format!("{e}\n"));
    }
    log::debug!("metrics scraped in {} µs", started.elapsed().as_micros());
    let (body, content_type) = match openmetrics {
        true => (body, OPENMETRICS),
        false => (classic(&body), CLASSIC),
    };
    Response {
        status: 200,
        content_type,
        body: body.into_bytes(),
    }
}

/// OpenMetrics text as the classic format (0.0.4) has it. prometheus-client writes only
/// OpenMetrics, where a counter's HELP and TYPE name its family (`x`) and its sample is
/// `x_total`; the classic format, which promtool, curl users and older scrapers read, names
/// all three `x_total`, and has no `# EOF`. Everything else is the same in both.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {text}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_like_their_samples() {
        let openmetrics = "# HELP x_reports Reports.\n# TYPE x_reports counter\n\
                           x_reports_total{verdict=\"a\"} 1\n# HELP x_bans Bans.\n\
                           # TYPE x_bans gauge\nx_bans 2.0\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP x_reports_total Reports.\n# TYPE x_reports_total counter\n\
             x_reports_total{verdict=\"a\"} 1\n# HELP x_bans Bans.\n# TYPE x_bans gauge\n\
             x_bans 2.0\n"
        );
    }
}
