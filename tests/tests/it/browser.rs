//! The dashboard in a real browser: Debian's headless Chromium (installed by
//! `scripts/install-chromium.sh` when missing) loads the cluster page and a consumer group's
//! page of a live cluster, runs their script (the vendored htmx), and the DOM it ends with has
//! the expected elements. Screenshots of both pages go to `target/dashboard-screenshots/`
//! (the README shows copies kept in `docs/`).
//!
//! Chromium is driven from its command line (`--dump-dom`, `--screenshot`), which needs no
//! WebDriver or Node.js: the DOM it prints is the one after the page's scripts ran (htmx adds
//! its indicator style to the head, which proves it did).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{ConsumeFrom, ConsumeStatus, Consumer, Message, Producer, ReceivedMessage};
use raftmq_tests::cluster::TestCluster;
use raftmq_tests::script_cluster::run_bounded;
use raftmq_tests::{wait_until, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on installing Chromium (apt) and on one browser run.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// Time the page's timers may run inside the browser before the DOM is taken.
const VIRTUAL_TIME_MS: u32 = 3000;
const STEP: Duration = Duration::from_secs(60);
const TOPIC: &str = "BrowserTopic";
const GROUP: &str = "browser_group";

/// Chromium, installed by the project script if missing.
fn chromium() -> anyhow::Result<PathBuf> {
    if !Path::new(CHROMIUM).exists() {
        let script = workspace_root().join("scripts/install-chromium.sh");
        let output = run_bounded(Command::new("bash").arg(script), INSTALL_TIMEOUT)?;
        anyhow::ensure!(
            output.success,
            "scripts/install-chromium.sh failed:\n{}{}",
            output.stdout,
            output.stderr
        );
    }
    Ok(PathBuf::from(CHROMIUM))
}

/// Runs headless Chromium on `url` with `extra` (`--dump-dom`, `--screenshot=...`); its stdout.
fn browse(url: &str, extra: &str) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let output = run_bounded(
        Command::new(chromium()?)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1680,760",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .arg(extra)
            .arg(url),
        BROWSER_TIMEOUT,
    )?;
    anyhow::ensure!(
        output.success,
        "chromium {extra} {url} failed ({:?}):\n{}",
        output.code,
        output.stderr
    );
    Ok(output.stdout)
}

fn screenshot(url: &str, path: &Path) -> anyhow::Result<()> {
    browse(url, &format!("--screenshot={}", path.display()))?;
    let png = std::fs::read(path)?;
    anyhow::ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    Ok(())
}

fn assert_has(dom: &str, what: &str, expected: &[&str]) {
    for text in expected {
        assert!(dom.contains(text), "the {what} DOM lacks {text:?}:\n{dom}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_cluster_and_a_consumer_group() -> anyhow::Result<()> {
    chromium()?;
    let cluster = TestCluster::start(3, &[])?;
    let namesrv = cluster.namesrv_addr.to_string();
    let admin = cluster.create_routed_topic(TOPIC, 4).await?;
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("browser_producer")
        .build()
        .await?;
    for index in 0..40 {
        producer
            .send(
                Message::new(TOPIC, format!("order {index}")).with_keys([format!("order-{index}")]),
            )
            .await?;
    }
    producer.shutdown().await;
    // A live consumer that reads them all and commits.
    let received: Arc<Mutex<Vec<ReceivedMessage>>> = Arc::default();
    let log = received.clone();
    let consumer = Consumer::builder()
        .namesrv(namesrv.clone())
        .group(GROUP)
        .subscribe(TOPIC, "*")
        .consume_from(ConsumeFrom::First)
        .commit_interval(Duration::from_millis(300))
        .start(move |messages: Vec<ReceivedMessage>| {
            log.lock().unwrap().extend(messages);
            std::future::ready(ConsumeStatus::Success)
        })
        .await?;
    let deadline = Instant::now() + STEP;
    while received.lock().unwrap().len() < 40 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer never read 40 messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ui = cluster.namesrv_admin;
    let client_id = consumer.client_id().to_owned();
    wait_until(STEP, || {
        Ok(cluster
            .admin
            .page(ui, "/ui/cluster")?
            .contains(r#"data-verdict="healthy""#)
            && cluster
                .admin
                .page(ui, &format!("/ui/group?name={GROUP}"))?
                .contains(&format!("<td>{client_id}</td>")))
    })?;

    let cluster_url = format!("http://{ui}/ui/cluster");
    let dom = browse(&cluster_url, "--dump-dom")?;
    assert_has(
        &dom,
        "cluster page",
        &[
            r#"id="members-broker-a""#,
            r#"data-node="1""#,
            r#"data-node="2""#,
            r#"data-node="3""#,
            r#"class="member leader""#,
            r#"data-verdict="healthy""#,
            // Added by htmx once it ran.
            ".htmx-indicator",
        ],
    );
    let group_url = format!("http://{ui}/ui/group?name={GROUP}");
    let dom = browse(&group_url, "--dump-dom")?;
    assert_has(
        &dom,
        "consumer group page",
        &[
            r#"id="group-queues""#,
            &format!(r#"<li class="client">{client_id}</li>"#),
            r#"id="reset-offset""#,
            ".htmx-indicator",
        ],
    );

    let shots = workspace_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots)?;
    screenshot(&cluster_url, &shots.join("dashboard-cluster.png"))?;
    screenshot(&group_url, &shots.join("dashboard-consumer-group.png"))?;
    consumer.shutdown().await;
    admin.shutdown().await;
    Ok(())
}
