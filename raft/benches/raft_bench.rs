//! Throughput of the raft crate: a plain `main`, run with `cargo bench -p raftmq-raft`
//! (add `-- log`, `-- cluster` or `-- failover` to run one part).
//!
//! 1. The log store alone: appends of 1, 10, 100 and 1000 entries of 1 KiB, first one at a time
//!    (each waits for its fsync, which is how openraft 0.9 drives `append`), then with up to
//!    [`LOG_APPENDS_IN_FLIGHT`] appends in flight (group commit).
//! 2. A three-member group on loopback in this process, with many concurrent `client_write`
//!    calls: committed proposals/s and commit latency, for proposals of one 1 KiB record and of
//!    many records (the broker's batching), see [`CLUSTER_ROWS`]; the last row also measures
//!    failover (leader shut down until a write commits on the new leader). The state machine is
//!    [`CounterStateMachine`]: like the broker's, it keeps only small state, one durable
//!    transaction per applied batch.
//!
//! Where the time goes: each row also shows what the process wrote to disk (from
//! `/proc/self/io`) and its CPU use (from `/proc/self/stat`), both Linux only.
//!
//! Every phase runs for a fixed, short time. Under `cargo test --all-targets` (CI: no `--bench`
//! argument) it runs as a smoke test, every phase a fraction of a second and one failover, so
//! CI checks that it works without spending minutes measuring.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use raftmq_raft::log_store::{LogStore, LogStoreConfig, LogStoreMetricsSnapshot};
use raftmq_raft::testing::CounterStateMachine;
use raftmq_raft::{
    AppRequest, Entry, EntryPayload, MetricsReceiver, Node, NodeConfig, NodeId, RaftNode,
    RaftTimers, log_id,
};
use tokio::sync::Semaphore;

const RECORD_BYTES: usize = 1024;
/// How long each phase runs: [`Phases::MEASURE`] under `cargo bench`, [`Phases::SMOKE`] under
/// `cargo test`.
struct Phases {
    log: Duration,
    cluster: Duration,
    cluster_warmup: Duration,
    failover_runs: usize,
}

impl Phases {
    const MEASURE: Phases = Phases {
        log: LOG_PHASE,
        cluster: CLUSTER_PHASE,
        cluster_warmup: CLUSTER_WARMUP,
        failover_runs: FAILOVER_RUNS,
    };
    const SMOKE: Phases = Phases {
        log: Duration::from_millis(200),
        cluster: Duration::from_millis(300),
        cluster_warmup: Duration::from_millis(100),
        failover_runs: 1,
    };
}

static PHASES: std::sync::OnceLock<&'static Phases> = std::sync::OnceLock::new();

fn phases() -> &'static Phases {
    PHASES.get().copied().unwrap_or(&Phases::MEASURE)
}

const LOG_PHASE: Duration = Duration::from_secs(2);
const LOG_BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
const LOG_APPENDS_IN_FLIGHT: usize = 64;
const CLUSTER_PHASE: Duration = Duration::from_secs(5);
const CLUSTER_WARMUP: Duration = Duration::from_secs(1);
/// `(1 KiB records per proposal, proposals in flight)` of each cluster row: unloaded latency,
/// one record per entry under load, then the broker's batching.
const CLUSTER_ROWS: [(usize, usize); 5] = [(1, 1), (1, 256), (64, 256), (256, 64), (1024, 16)];
const CLUSTER_MEMBERS: u64 = 3;
/// Failovers of an idle group measured (each on a fresh group).
const FAILOVER_RUNS: usize = 3;
/// Bound on waits for the cluster to form or to stop.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Latencies above this are clamped in the histogram.
const LATENCY_MAX_US: u64 = 60_000_000;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test` runs this binary without it.
    let measuring = std::env::args().any(|a| a == "--bench");
    let _ = PHASES.set(if measuring {
        &Phases::MEASURE
    } else {
        &Phases::SMOKE
    });
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants =
        |part: &str| filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if wants("log") {
            log_store_bench().await?;
        }
        if wants("cluster") {
            cluster_bench().await?;
        }
        if wants("failover") {
            failover_bench().await?;
        }
        anyhow::Ok(())
    })
}

fn delta(
    after: LogStoreMetricsSnapshot,
    before: LogStoreMetricsSnapshot,
) -> LogStoreMetricsSnapshot {
    LogStoreMetricsSnapshot {
        appends: after.appends - before.appends,
        entries_appended: after.entries_appended - before.entries_appended,
        transactions: after.transactions - before.transactions,
        fsyncs: after.fsyncs - before.fsyncs,
        commands_flushed: after.commands_flushed - before.commands_flushed,
        entries_flushed: after.entries_flushed - before.entries_flushed,
        bytes_flushed: after.bytes_flushed - before.bytes_flushed,
        commit_nanos_total: after.commit_nanos_total - before.commit_nanos_total,
        entries_read_from_cache: after.entries_read_from_cache - before.entries_read_from_cache,
        entries_read_from_disk: after.entries_read_from_disk - before.entries_read_from_disk,
        waiting_for_space: after.waiting_for_space,
        apply_waiting_for_space: after.apply_waiting_for_space,
        segments_scrubbed: after.segments_scrubbed - before.segments_scrubbed,
        scrub_passes: after.scrub_passes - before.scrub_passes,
    }
}

/// Bytes this process caused to be written to the block device so far (Linux), if known.
fn disk_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU seconds (user + system) this process used so far (Linux), if known.
fn cpu_seconds() -> Option<f64> {
    const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
}

/// Disk bytes and CPU seconds used between two points.
#[derive(Clone, Copy)]
struct Usage {
    disk_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
}

impl Usage {
    fn now() -> Self {
        Usage {
            disk_bytes: disk_write_bytes(),
            cpu_seconds: cpu_seconds(),
        }
    }

    /// Disk MiB/s and CPU cores busy since `self`.
    fn rates_since(self, elapsed: Duration) -> (String, String) {
        let after = Usage::now();
        let disk = match (self.disk_bytes, after.disk_bytes) {
            (Some(a), Some(b)) => format!("{:.1}", per_second(b - a, elapsed) / (1024.0 * 1024.0)),
            _ => "n/a".into(),
        };
        let cpu = match (self.cpu_seconds, after.cpu_seconds) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / elapsed.as_secs_f64()),
            _ => "n/a".into(),
        };
        (disk, cpu)
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn ms_per(nanos: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        nanos as f64 / count as f64 / 1e6
    }
}

async fn log_store_bench() -> Result<()> {
    println!(
        "== log store: appends of 1 KiB entries, {:?} per row",
        phases().log
    );
    println!(
        "{:>6} {:>10} {:>11} {:>12} {:>9} {:>10} {:>13} {:>15} {:>11} {:>6}",
        "batch",
        "in-flight",
        "appends/s",
        "entries/s",
        "MiB/s",
        "fsyncs/s",
        "entries/fsync",
        "commit ms/fsync",
        "disk MiB/s",
        "cores"
    );
    for in_flight in [1, LOG_APPENDS_IN_FLIGHT] {
        for batch in LOG_BATCH_SIZES {
            let usage = Usage::now();
            let (elapsed, m) = log_store_phase(batch, in_flight).await?;
            let (disk, cpu) = usage.rates_since(elapsed);
            println!(
                "{:>6} {:>10} {:>11.0} {:>12.0} {:>9.1} {:>10.0} {:>13.1} {:>15.2} {:>11} {:>6}",
                batch,
                in_flight,
                per_second(m.appends, elapsed),
                per_second(m.entries_flushed, elapsed),
                per_second(m.bytes_flushed, elapsed) / (1024.0 * 1024.0),
                per_second(m.fsyncs, elapsed),
                m.entries_flushed as f64 / m.fsyncs.max(1) as f64,
                ms_per(m.commit_nanos_total, m.fsyncs),
                disk,
                cpu,
            );
        }
    }
    Ok(())
}

/// Appends `batch`-entry appends for the log phase with at most `in_flight` not yet durable.
async fn log_store_phase(
    batch: usize,
    in_flight: usize,
) -> Result<(Duration, LogStoreMetricsSnapshot)> {
    let dir = tempfile::tempdir()?;
    let mut store = LogStore::open(dir.path(), LogStoreConfig::default())?;
    let payload = Bytes::from(vec![0x5A; RECORD_BYTES]);
    let permits = Arc::new(Semaphore::new(in_flight));
    let before = store.metrics();
    let started = Instant::now();
    let mut next_index = 0u64;
    while started.elapsed() < phases().log {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let entries: Vec<Entry> = (0..batch as u64)
            .map(|i| Entry {
                log_id: log_id(1, 1, next_index + i),
                payload: EntryPayload::Normal(AppRequest(payload.clone())),
            })
            .collect();
        next_index += batch as u64;
        store
            .append_with_callback(entries, move |result| {
                if let Err(e) = result {
                    eprintln!("append failed: {e}");
                }
                drop(permit);
            })
            .await?;
    }
    let all = u32::try_from(in_flight)?;
    let _drained = permits.acquire_many(all).await?;
    let elapsed = started.elapsed();
    let metrics = delta(store.metrics(), before);
    store.flusher().stop().await;
    Ok((elapsed, metrics))
}

struct Member {
    node: RaftNode,
}

async fn start_cluster(root: &std::path::Path) -> Result<BTreeMap<NodeId, Member>> {
    let mut members = BTreeMap::new();
    for id in 1..=CLUSTER_MEMBERS {
        let dir = root.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)?;
        let counter = CounterStateMachine::open(&dir.join("counter.redb"))?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let mut config = NodeConfig::new(id, &dir);
        config.timers = bench_timers()?;
        let node = RaftNode::start(config, listener, counter).await?;
        members.insert(id, Member { node });
    }
    let membership: BTreeMap<NodeId, Node> = members
        .iter()
        .map(|(id, m)| {
            (
                *id,
                Node {
                    addr: m.node.local_addr().to_string(),
                },
            )
        })
        .collect();
    members
        .get(&1)
        .context("member 1")?
        .node
        .initialize(membership)
        .await?;
    Ok(members)
}

/// The cluster rows to run: [`CLUSTER_ROWS`], or `RAFTMQ_BENCH_ROWS=<records>x<in flight>,...`
/// (e.g. `1024x16`, the failover-under-load row alone: each row writes gigabytes to disk).
fn cluster_rows() -> Result<Vec<(usize, usize)>> {
    let Ok(spec) = std::env::var("RAFTMQ_BENCH_ROWS") else {
        return Ok(CLUSTER_ROWS.to_vec());
    };
    spec.split(',')
        .map(|row| {
            let (records, in_flight) = row
                .trim()
                .split_once('x')
                .context("RAFTMQ_BENCH_ROWS wants <records>x<in flight>,...")?;
            Ok((records.parse()?, in_flight.parse()?))
        })
        .collect()
}

/// The timers to run the group with: the defaults, or
/// `RAFTMQ_BENCH_TIMERS=<heartbeat_ms>,<election_min_ms>,<election_max_ms>` to try others.
fn bench_timers() -> Result<RaftTimers> {
    let Ok(spec) = std::env::var("RAFTMQ_BENCH_TIMERS") else {
        return Ok(RaftTimers::default());
    };
    let parts: Vec<u64> = spec
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .context("RAFTMQ_BENCH_TIMERS")?;
    let [
        heartbeat_interval_ms,
        election_timeout_min_ms,
        election_timeout_max_ms,
    ] = parts[..]
    else {
        anyhow::bail!("RAFTMQ_BENCH_TIMERS wants heartbeat,election_min,election_max in ms");
    };
    Ok(RaftTimers {
        heartbeat_interval_ms,
        election_timeout_min_ms,
        election_timeout_max_ms,
    })
}

/// Waits until `node` sees a leader other than `not`; returns it and its term.
async fn wait_leader(node: &RaftNode, not: Option<NodeId>) -> Result<(NodeId, u64)> {
    let metrics = node
        .raft()
        .wait(Some(WAIT_MAX))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != not,
            "a leader",
        )
        .await?;
    let leader = metrics.current_leader.context("no leader")?;
    Ok((leader, metrics.current_term))
}

/// Waits until `node` leads with a quorum's acknowledgement: openraft 0.10 refuses writes
/// (forward to leader, lease expired) before that.
async fn wait_writable(node: &RaftNode) -> Result<()> {
    node.raft()
        .wait(Some(WAIT_MAX))
        .metrics(
            |m| m.state == openraft::ServerState::Leader && m.last_quorum_acked.is_some(),
            "the leader takes writes",
        )
        .await?;
    Ok(())
}

async fn stop_all(members: BTreeMap<NodeId, Member>) -> Result<()> {
    for (_, member) in members {
        tokio::time::timeout(WAIT_MAX, member.node.shutdown())
            .await
            .context("shutdown timed out")??;
    }
    Ok(())
}

async fn cluster_bench() -> Result<()> {
    println!(
        "== three-member group on loopback, one process, one disk: {:?} measured per row after {:?} warm-up; {:?}",
        phases().cluster,
        phases().cluster_warmup,
        bench_timers()?
    );
    println!(
        "{:>9} {:>9} {:>11} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5} {:>6}",
        "records/",
        "in",
        "proposals/s",
        "1KiB rec/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "L fsync/s",
        "ent/fsync",
        "disk",
        "cores",
        "terms",
        "failover"
    );
    println!(
        "{:>9} {:>9} {:>11} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5} {:>6}",
        "proposal", "flight", "", "", "", "", "", "", "L / F", "MiB/s", "", "+", "ms"
    );
    let rows = cluster_rows()?;
    let last = rows.len().saturating_sub(1);
    for (row, (records, in_flight)) in rows.into_iter().enumerate() {
        cluster_phase(records, in_flight, row == last).await?;
    }
    println!(
        "terms + = elections during the measured window (spurious under load if > 0); failover = \
         from the leader being gone to the first write committed on the new leader (last row)"
    );
    Ok(())
}

/// Shuts the leader down and returns the milliseconds from the moment it is gone (no more
/// heartbeats) to the first write committed by its successor.
async fn fail_over(members: &mut BTreeMap<NodeId, Member>, leader_id: NodeId) -> Result<f64> {
    let old = members.remove(&leader_id).context("leader")?;
    old.node.shutdown().await?;
    let started = Instant::now();
    let survivor = &members.values().next().context("a survivor")?.node;
    let (new_leader, _) = wait_leader(survivor, Some(leader_id)).await?;
    let new_leader = &members.get(&new_leader).context("new leader")?.node;
    wait_writable(new_leader).await?;
    new_leader
        .raft()
        .client_write(AppRequest(Bytes::from_static(b"after failover")))
        .await
        .map_err(|e| anyhow!("write after failover: {e}"))?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Failover of an idle group, [`FAILOVER_RUNS`] times on fresh groups (once in a smoke run).
async fn failover_bench() -> Result<()> {
    let mut runs = Vec::new();
    for _ in 0..phases().failover_runs {
        let root = tempfile::tempdir()?;
        let mut members = start_cluster(root.path()).await?;
        let first = &members.get(&1).context("member 1")?.node;
        let (leader_id, _) = wait_leader(first, None).await?;
        let leader = &members.get(&leader_id).context("leader")?.node;
        wait_writable(leader).await?;
        leader
            .raft()
            .client_write(AppRequest(Bytes::from_static(b"before failover")))
            .await
            .map_err(|e| anyhow!("write before failover: {e}"))?;
        runs.push(fail_over(&mut members, leader_id).await?);
        stop_all(members).await?;
    }
    let shown: Vec<String> = runs.iter().map(|ms| format!("{ms:.0}")).collect();
    println!(
        "== failover of an idle group ({:?}): leader gone -> first commit on the new leader: {} ms",
        bench_timers()?,
        shown.join(", ")
    );
    Ok(())
}

async fn cluster_phase(
    records_per_proposal: usize,
    in_flight: usize,
    failover: bool,
) -> Result<()> {
    let root = tempfile::tempdir()?;
    let members = start_cluster(root.path()).await?;
    let first = &members.get(&1).context("member 1")?.node;
    let (leader_id, _) = wait_leader(first, None).await?;
    let leader = &members.get(&leader_id).context("leader")?.node;
    wait_writable(leader).await?;
    let follower_id = *members
        .keys()
        .find(|id| **id != leader_id)
        .context("a follower")?;
    let follower = &members.get(&follower_id).context("follower")?.node;

    let value = Bytes::from(vec![0x42; RECORD_BYTES * records_per_proposal]);
    let warm_until = Instant::now() + phases().cluster_warmup;
    let measure_until = warm_until + phases().cluster;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let raft = leader.raft().clone();
        let value = value.clone();
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)?;
            let mut committed = 0u64;
            loop {
                let now = Instant::now();
                if now >= measure_until {
                    break;
                }
                raft.client_write(AppRequest(value.clone()))
                    .await
                    .map_err(|e| anyhow!("client_write: {e}"))?;
                if now >= warm_until {
                    committed += 1;
                    let micros = u64::try_from(now.elapsed().as_micros()).unwrap_or(LATENCY_MAX_US);
                    histogram.record(micros.clamp(1, LATENCY_MAX_US))?;
                }
            }
            anyhow::Ok((committed, histogram))
        });
    }
    // Counters over the measured window only.
    tokio::time::sleep_until(warm_until.into()).await;
    let term_before = leader.raft().metrics().borrow_watched().current_term;
    let usage = Usage::now();
    let leader_before = leader.log_metrics();
    let follower_before = follower.log_metrics();
    let measured_from = Instant::now();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)?;
    let mut committed = 0u64;
    while let Some(joined) = tasks.join_next().await {
        let (count, task_histogram) = joined??;
        committed += count;
        histogram.add(task_histogram)?;
    }
    // Proposals are counted when they started inside the window, so rate them over the window;
    // disk, CPU and fsyncs are counted until the last proposal finished.
    let window = phases().cluster;
    let elapsed = measured_from.elapsed();
    let (disk, cpu) = usage.rates_since(elapsed);
    let leader_m = delta(leader.log_metrics(), leader_before);
    let follower_m = delta(follower.log_metrics(), follower_before);
    let elections = leader.raft().metrics().borrow_watched().current_term - term_before;

    let mut members = members;
    let failover_ms = if failover {
        let millis = fail_over(&mut members, leader_id).await?;
        format!("{millis:.0}")
    } else {
        "-".into()
    };

    println!(
        "{:>9} {:>9} {:>11.0} {:>10.0} {:>8.1} {:>8.2} {:>8.2} {:>9.0} {:>4.0} / {:<4.0} {:>9} {:>6} {:>5} {:>6}",
        records_per_proposal,
        in_flight,
        per_second(committed, window),
        per_second(committed * records_per_proposal as u64, window),
        per_second(
            committed * (records_per_proposal * RECORD_BYTES) as u64,
            window
        ) / (1024.0 * 1024.0),
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        per_second(leader_m.fsyncs, elapsed),
        leader_m.entries_flushed as f64 / leader_m.fsyncs.max(1) as f64,
        follower_m.entries_flushed as f64 / follower_m.fsyncs.max(1) as f64,
        disk,
        cpu,
        elections,
        failover_ms,
    );
    stop_all(members).await
}
