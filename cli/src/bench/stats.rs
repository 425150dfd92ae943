//! Measurements: latency histograms (hdrhistogram, microseconds), the shared counters the lanes
//! bump, the live progress line, and the report `mq bench` prints (text or `--json`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The largest latency a histogram holds (longer ones are recorded as this), microseconds.
pub const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant digits the histograms keep.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Period of the progress line.
pub const PROGRESS_PERIOD: Duration = Duration::from_secs(1);
/// Bytes of the send time at the start of every generated body (u64 nanoseconds since the
/// run's epoch, little-endian): `e2e` reads it back on delivery.
pub const STAMP_BYTES: usize = 8;

/// A histogram of latencies in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `elapsed`, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(LATENCY_MAX_US);
    // Clamped into the histogram's bounds, so recording cannot fail.
    let _ = hist.record(micros.clamp(1, LATENCY_MAX_US));
}

/// A generated body: the send time, then filler up to `size` bytes (at least the stamp).
pub fn stamped_body(epoch: Instant, size: usize) -> bytes::Bytes {
    let mut body = bytes::BytesMut::with_capacity(size.max(STAMP_BYTES));
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    body.extend_from_slice(&nanos.to_le_bytes());
    body.resize(size.max(STAMP_BYTES), b'x');
    body.freeze()
}

/// The send time stamped into `body`, if it has one.
pub fn stamp_of(body: &[u8]) -> Option<Duration> {
    let stamp: [u8; STAMP_BYTES] = body.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(stamp)))
}

/// Percentiles of one histogram, microseconds.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    /// `None` for an empty histogram.
    pub fn of(hist: &Histogram<u64>) -> Option<Latency> {
        (!hist.is_empty()).then(|| Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
            samples: hist.len(),
        })
    }

    fn line(&self, what: &str) -> String {
        let ms = |us: u64| us as f64 / 1e3;
        format!(
            "  {what:<8} ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.samples
        )
    }
}

/// What one `mq bench produce|consume|e2e` run measured. The field names are shared with
/// `bench/nats-client` so that `bench/compare-nats.sh` reads both alike.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub system: &'static str,
    pub mode: &'static str,
    pub topic: String,
    /// Producers or consumers.
    pub producers: usize,
    /// Sends in flight per producer (consume: messages per pull).
    pub window: usize,
    /// Messages per send.
    pub batch: usize,
    /// Body bytes.
    pub size: usize,
    /// Messages measured (acknowledged, or consumed).
    pub messages: u64,
    /// Every message acknowledged or consumed, the warm-up's too (for CPU per message).
    pub total_messages: u64,
    pub bytes: u64,
    /// Sends that certainly failed.
    pub errors: u64,
    /// Sends whose outcome is unknown (maybe stored).
    pub unknown: u64,
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Send to acknowledgement, per send (a batch is one send), microseconds.
    pub latency_us: Option<Latency>,
    /// Send start to delivery to the consumer, microseconds (`e2e`).
    pub e2e_latency_us: Option<Latency>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {} on {}: {} msgs ({} B each) in {:.2} s: {:.0} msgs/s, {:.2} MB/s; {} failed, {} unknown\n",
            self.system,
            self.mode,
            self.topic,
            self.messages,
            self.size,
            self.elapsed_s,
            self.msgs_per_s,
            self.mb_per_s,
            self.errors,
            self.unknown,
        );
        for (what, latency) in [("send", &self.latency_us), ("e2e", &self.e2e_latency_us)] {
            if let Some(latency) = latency {
                out.push_str(&latency.line(what));
                out.push('\n');
            }
        }
        out
    }
}

/// Counters the lanes share with the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages measured so far.
    pub messages: AtomicU64,
    /// Messages acknowledged so far, warm-up included.
    pub total: AtomicU64,
    pub errors: AtomicU64,
    pub unknown: AtomicU64,
    /// Messages delivered to a consumer (`e2e`).
    pub delivered: AtomicU64,
}

/// Bounds a load run: an unmeasured warm-up, then a measured span that ends at a deadline or
/// when `count` messages have been measured, whichever comes first.
#[derive(Debug)]
pub struct Bounds {
    pub epoch: Instant,
    pub measure_from: Instant,
    pub deadline: Instant,
    /// Messages still to measure.
    tickets: AtomicU64,
    stopped: AtomicBool,
}

impl Bounds {
    /// `count == 0`: no bound but the duration.
    pub fn new(epoch: Instant, warmup: Duration, duration: Duration, count: u64) -> Arc<Bounds> {
        let now = Instant::now();
        Arc::new(Bounds {
            epoch,
            measure_from: now + warmup,
            deadline: now + warmup + duration,
            tickets: AtomicU64::new(if count == 0 { u64::MAX } else { count }),
            stopped: AtomicBool::new(false),
        })
    }

    /// Whether a lane sends again, for `messages` messages: `Some(true)` if that send is
    /// measured, `Some(false)` during the warm-up, `None` once the run is over.
    pub fn next(&self, messages: u64) -> Option<bool> {
        let now = Instant::now();
        if self.stopped.load(Ordering::Relaxed) || now >= self.deadline {
            self.stop();
            return None;
        }
        if now < self.measure_from {
            return Some(false);
        }
        let taken = self
            .tickets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(messages)
            });
        if taken.is_err() {
            self.stop();
            return None;
        }
        Some(true)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Prints `[  3.0s] produce: 12345 msgs, 8210 msgs/s, 0 failed, 0 unknown` on stderr once a
/// second until `stop` fires: rewritten in place on a terminal, one line each otherwise.
pub fn spawn_progress(
    label: String,
    counters: Arc<Counters>,
    stop: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let terminal = std::io::stderr().is_terminal();
    tracker.spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(PROGRESS_PERIOD);
        tick.tick().await;
        let mut last = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = counters.messages.load(Ordering::Relaxed);
            let delivered = counters.delivered.load(Ordering::Relaxed);
            let line = format!(
                "[{:>6.1}s] {label}: {now} msgs, {} msgs/s, {} failed, {} unknown{}",
                started.elapsed().as_secs_f64(),
                now.saturating_sub(last),
                counters.errors.load(Ordering::Relaxed),
                counters.unknown.load(Ordering::Relaxed),
                if delivered > 0 {
                    format!(", {delivered} delivered")
                } else {
                    String::new()
                }
            );
            last = now;
            if terminal {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
        if terminal {
            eprint!("\r\x1b[2K");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_bodies_have_the_asked_size() {
        let epoch = Instant::now() - Duration::from_millis(5);
        let body = stamped_body(epoch, 100);
        assert_eq!(body.len(), 100);
        let stamp = stamp_of(&body).unwrap();
        assert!(stamp >= Duration::from_millis(5), "{stamp:?}");
        assert_eq!(stamped_body(epoch, 3).len(), STAMP_BYTES);
        assert_eq!(stamp_of(b"short"), None);
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut hist = new_histogram();
        for us in 1..=1000u64 {
            record(&mut hist, Duration::from_micros(us));
        }
        record(&mut hist, Duration::from_secs(3600));
        let latency = Latency::of(&hist).unwrap();
        assert!((499..=501).contains(&latency.p50), "{latency:?}");
        assert!((989..=991).contains(&latency.p99), "{latency:?}");
        assert!(
            latency.max >= LATENCY_MAX_US - LATENCY_MAX_US / 1000,
            "clamped: {latency:?}"
        );
        assert_eq!(latency.samples, 1001);
        assert_eq!(Latency::of(&new_histogram()), None);
    }

    #[test]
    fn bounds_hand_out_exactly_count_messages_after_the_warmup() {
        let bounds = Bounds::new(Instant::now(), Duration::ZERO, Duration::from_secs(60), 10);
        assert_eq!(bounds.next(4), Some(true));
        assert_eq!(bounds.next(4), Some(true));
        // 2 left: a send of 4 would overshoot, so the run ends.
        assert_eq!(bounds.next(4), None);
        // Stopped for every lane, even for a send that would fit.
        assert_eq!(bounds.next(1), None);

        let warming = Bounds::new(Instant::now(), Duration::from_secs(60), Duration::ZERO, 0);
        assert_eq!(warming.next(1), Some(false));

        let over = Bounds::new(Instant::now(), Duration::ZERO, Duration::ZERO, 0);
        assert_eq!(over.next(1), None);
    }
}
