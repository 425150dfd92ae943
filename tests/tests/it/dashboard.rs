//! The dashboard (`/ui`) against a live cluster of processes (a NameServer and a 3-member
//! group): every page renders on the NameServer and on each member with the cluster's real
//! content; a message body and key with HTML, and a topic name with HTML, are shown as text;
//! each action asks for confirmation first and then does what `mq` does (create and delete a
//! topic, reset offsets by time, resend to a group, transfer leadership); the RocketMQ-named
//! metrics count what happened.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{ConsumeFrom, ConsumeStatus, Consumer, Message, Producer, ReceivedMessage};
use raftmq_tests::cluster::{START_TIMEOUT, TestCluster};
use raftmq_tests::wait_until;

const TOPIC: &str = "DashTopic";
const GROUP: &str = "dash_group";
const QUEUES: u32 = 4;
const STEP: Duration = Duration::from_secs(60);
const HTML_BODY: &str = "<script>alert('body')</script>";
const HTML_KEY: &str = "<b>key</b>";

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A page's HTML, which must hold every one of `expected`.
fn page_with(
    cluster: &TestCluster,
    addr: SocketAddr,
    path: &str,
    expected: &[&str],
) -> anyhow::Result<String> {
    let html = cluster.admin.page(addr, path)?;
    for text in expected {
        anyhow::ensure!(
            html.contains(text),
            "{path} on {addr} lacks {text:?}:\n{html}"
        );
    }
    Ok(html)
}

/// Posts an action: the first answer must be its confirmation page, the second its outcome.
fn confirmed_action(
    cluster: &TestCluster,
    addr: SocketAddr,
    fields: &[(&str, &str)],
) -> anyhow::Result<String> {
    let confirmation = cluster.admin.post_form(addr, "/ui/action", fields)?;
    anyhow::ensure!(
        confirmation.contains(r#"id="confirmation""#)
            && confirmation.contains(r#"name="confirmed" value="yes""#),
        "no confirmation step for {fields:?}:\n{confirmation}"
    );
    let mut confirmed = fields.to_vec();
    confirmed.push(("confirmed", "yes"));
    cluster.admin.post_form(addr, "/ui/action", &confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_live_cluster_and_every_action_confirms_first() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    let namesrv = cluster.namesrv_addr.to_string();
    let admin = cluster.create_routed_topic(TOPIC, QUEUES).await?;

    // Three messages, one with HTML in its body and key.
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("dash_producer")
        .build()
        .await?;
    let html_sent = producer
        .send(
            Message::new(TOPIC, HTML_BODY)
                .with_keys([HTML_KEY])
                .with_tags("TagA"),
        )
        .await?;
    for body in ["plain one", "plain two"] {
        producer.send(Message::new(TOPIC, body)).await?;
    }
    producer.shutdown().await;

    // A live consumer that reads them and commits.
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
    wait_for("the consumer reading 3 messages", || {
        received.lock().unwrap().len() >= 3
    })
    .await?;

    let leader = cluster.wait_for_registered_leader(START_TIMEOUT)?;
    let servers: Vec<SocketAddr> = std::iter::once(cluster.namesrv_admin)
        .chain(cluster.members.iter().map(|m| m.admin()))
        .collect();

    // The cluster page, on every server: each member with its Raft state, the group healthy.
    for addr in &servers {
        wait_until(STEP, || {
            Ok(cluster
                .admin
                .page(*addr, "/ui/cluster")?
                .contains(r#"data-verdict="healthy""#))
        })?;
        let leader_row = format!(r#"<tr class="member leader" data-node="{leader}">"#);
        page_with(
            &cluster,
            *addr,
            "/ui/cluster",
            &[
                "Broker group broker-a",
                r#"id="members-broker-a""#,
                r#"data-node="1""#,
                r#"data-node="2""#,
                r#"data-node="3""#,
                &leader_row,
                "Follower",
                "voter",
                "ms ago (quorum)",
                // A follower's last contact with the leader.
                " ms ago</td>",
                r#"hx-trigger="every 5s""#,
            ],
        )?;
    }
    let ui = cluster.member(leader)?.admin();
    // `/ui` redirects to the cluster page (the client does not follow redirects); the script
    // is served.
    let redirect = cluster.admin.page(ui, "/ui").unwrap_err().to_string();
    assert!(redirect.contains("HTTP 303"), "{redirect}");
    assert!(
        cluster
            .admin
            .page(ui, "/ui/assets/htmx.min.js")?
            .starts_with("/*! htmx")
    );

    // Topics: the topic with its 3 messages; its page explains the route and lists queues.
    let topics = page_with(
        &cluster,
        ui,
        "/ui/topics",
        &[r#"data-topic="DashTopic""#, "Create a topic"],
    )?;
    assert!(topics.contains(r#"<td class="num">3</td>"#), "{topics}");
    page_with(
        &cluster,
        cluster.namesrv_admin,
        "/ui/topic?name=DashTopic",
        &[
            r#"data-verdict="routable""#,
            "On broker-a",
            "broker group broker-a: leader",
        ],
    )?;
    page_with(
        &cluster,
        ui,
        "/ui/topic?name=NoSuchTopic",
        &[
            r#"data-verdict="topic_unknown""#,
            "the NameServer has no route for topic NoSuchTopic",
        ],
    )?;

    // Consumer groups: the group, its online client, who pulled each queue, no lag left.
    let client_id = consumer.client_id().to_owned();
    page_with(&cluster, ui, "/ui/groups", &[r#"data-group="dash_group""#])?;
    wait_until(STEP, || {
        let html = cluster.admin.page(ui, "/ui/group?name=dash_group")?;
        Ok(html.contains(r#"<strong id="total-lag">0</strong>"#)
            && html.contains(&format!("<td>{client_id}</td>")))
    })?;
    page_with(
        &cluster,
        ui,
        "/ui/group?name=dash_group",
        &[
            &format!(r#"<li class="client">{client_id}</li>"#),
            &format!("<td>{client_id}</td>"),
            "Reset the group's offsets by time",
        ],
    )?;

    // Messages: by queue offset and by offset id, with the HTML body and key as text.
    let by_offset = format!(
        "/ui/messages?topic={TOPIC}&broker={}&queue={}&offset={}",
        html_sent.queue.broker_name, html_sent.queue.queue_id, html_sent.queue_offset
    );
    for path in [
        by_offset.clone(),
        format!("/ui/messages?id={}", html_sent.offset_msg_id),
    ] {
        let html = page_with(
            &cluster,
            ui,
            &path,
            &[
                "&lt;script&gt;alert('body')&lt;/script&gt;",
                "&lt;b&gt;key&lt;/b&gt;",
                r#"id="properties""#,
                "TagA",
                // The resend form names the broker group, found from the id's address too.
                r#"name="broker" value="broker-a""#,
            ],
        )?;
        assert!(
            !html.contains(HTML_BODY) && !html.contains(HTML_KEY),
            "{html}"
        );
    }
    // By key (the query-by-key index) and by the message id the producer gave (UNIQ_KEY).
    for path in [
        format!("/ui/messages?topic={TOPIC}&key=%3Cb%3Ekey%3C%2Fb%3E"),
        format!("/ui/messages?topic={TOPIC}&id={}", html_sent.msg_id),
    ] {
        page_with(
            &cluster,
            ui,
            &path,
            &[
                "&lt;script&gt;alert('body')&lt;/script&gt;",
                r#"id="message-keys""#,
            ],
        )?;
    }
    page_with(
        &cluster,
        ui,
        &format!("/ui/messages?topic={TOPIC}&key=no-such-key"),
        &[
            r#"id="not-found""#,
            "no message in DashTopic with key no-such-key",
        ],
    )?;
    page_with(&cluster, ui, "/ui/dlq", &["No dead-letter topic"])?;

    // A message the group gives up on (sent back with delay level -1) lands in its DLQ, which
    // lists it; resent from there, the group consumes it again.
    let given_up = received
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.body.as_ref() == b"plain one")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("plain one was not consumed"))?;
    admin
        .broker()
        .send_message_back(
            &cluster.member(leader)?.remoting().to_string(),
            GROUP,
            &given_up,
            -1,
            16,
        )
        .await?;
    page_with(
        &cluster,
        ui,
        "/ui/dlq",
        &["%DLQ%dash_group", r#"<td class="num">1</td>"#],
    )?;
    let dlq = page_with(
        &cluster,
        ui,
        "/ui/dlq?topic=%25DLQ%25dash_group",
        &[
            r#"id="dlq-messages""#,
            "plain one",
            r#"data-action="resend""#,
        ],
    )?;
    // The resend button's hidden fields name the message.
    let hidden = |name: &str| -> anyhow::Result<String> {
        let marker = format!(r#"name="{name}" value=""#);
        let start = dlq
            .find(&marker)
            .ok_or_else(|| anyhow::anyhow!("no {name} in {dlq}"))?
            + marker.len();
        Ok(dlq[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect())
    };
    let dlq_offset = hidden("offset")?;
    let dlq_queue = hidden("queue")?;
    let before = received.lock().unwrap().len();
    let resent = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "resend"),
            ("group", GROUP),
            ("topic", "%DLQ%dash_group"),
            ("broker", "broker-a"),
            ("queue", &dlq_queue),
            ("offset", &dlq_offset),
        ],
    )?;
    assert!(
        resent.contains("sent a copy to %RETRY%dash_group"),
        "{resent}"
    );
    wait_for("the DLQ message consumed again", || {
        received.lock().unwrap()[before..]
            .iter()
            .any(|m| m.body.as_ref() == b"plain one" && m.topic == TOPIC)
    })
    .await?;

    // A topic name with HTML: refused, and shown as text.
    let refused = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "create_topic"),
            ("topic", "<img src=x onerror=alert(1)>"),
        ],
    )?;
    assert!(refused.contains(r#"data-outcome="failed""#), "{refused}");
    assert!(
        refused.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{refused}"
    );
    assert!(!refused.contains("<img src=x"), "{refused}");

    // Create and delete a topic, each confirmed first.
    let created = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "create_topic"),
            ("topic", "DashCreated"),
            ("queues", "2"),
        ],
    )?;
    assert!(
        created.contains("created topic DashCreated on broker-a"),
        "{created}"
    );
    page_with(&cluster, ui, "/ui/topics", &[r#"data-topic="DashCreated""#])?;
    let deleted = confirmed_action(
        &cluster,
        ui,
        &[("action", "delete_topic"), ("topic", "DashCreated")],
    )?;
    assert!(deleted.contains("deleted topic DashCreated"), "{deleted}");
    assert!(
        !cluster
            .admin
            .page(ui, "/ui/topics")?
            .contains(r#"data-topic="DashCreated""#)
    );

    // Resend one message to the group: a copy in %RETRY%dash_group, consumed again.
    let before = received.lock().unwrap().len();
    let queue_id = html_sent.queue.queue_id.to_string();
    let offset = html_sent.queue_offset.to_string();
    let resent = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "resend"),
            ("group", GROUP),
            ("topic", TOPIC),
            ("broker", &html_sent.queue.broker_name),
            ("queue", &queue_id),
            ("offset", &offset),
        ],
    )?;
    assert!(
        resent.contains("sent a copy to %RETRY%dash_group"),
        "{resent}"
    );
    wait_for("the resent copy consumed", || {
        received.lock().unwrap()[before..]
            .iter()
            .any(|m| m.body.as_ref() == HTML_BODY.as_bytes() && m.topic == TOPIC)
    })
    .await?;

    // Reset by time to the epoch, once the consumer is gone: every message is lag again.
    consumer.shutdown().await;
    wait_until(STEP, || {
        Ok(!cluster
            .admin
            .page(ui, "/ui/group?name=dash_group")?
            .contains(r#"<li class="client">"#))
    })?;
    let reset = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "reset_offset"),
            ("group", GROUP),
            ("topic", TOPIC),
            ("time", "1970-01-01T00:00"),
        ],
    )?;
    assert!(
        reset.contains("reset dash_group's offsets on DashTopic"),
        "{reset}"
    );
    page_with(
        &cluster,
        ui,
        "/ui/group?name=dash_group",
        &[r#"<strong id="total-lag">3</strong>"#],
    )?;

    // The RocketMQ-named metrics saw the sends and pulls.
    let metrics = cluster.admin.metrics(ui)?;
    for series in [
        "rocketmq_messages_in_total{",
        "rocketmq_messages_out_total{",
        "rocketmq_consumer_lag_messages{",
        "rocketmq_rpc_latency_bucket{",
        "rocketmq_send_to_dlq_messages_total{",
        "raftmq_raft_commit_index{",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    assert!(metrics.contains(r#"topic="DashTopic""#), "{metrics}");

    // Transfer leadership to a follower: the leader hands over and answers once it leads.
    let target = cluster
        .members
        .iter()
        .map(|m| m.node_id)
        .find(|id| *id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let target_text = target.to_string();
    let fields = [
        ("action", "transfer_leader"),
        ("group", "broker-a"),
        ("node", target_text.as_str()),
    ];
    let answer = confirmed_action(&cluster, ui, &fields)?;
    assert!(
        answer.contains(&format!("node {target} leads broker-a")),
        "{answer}"
    );
    wait_until(STEP, || Ok(cluster.leader() == Some(target)))?;
    cluster.wait_for_registered_leader(START_TIMEOUT)?;
    let new_leader_row = format!(r#"<tr class="member leader" data-node="{target}">"#);
    wait_until(STEP, || {
        Ok(cluster
            .admin
            .page(cluster.namesrv_admin, "/ui/cluster")?
            .contains(&new_leader_row))
    })?;
    admin.shutdown().await;
    Ok(())
}

#[test]
fn a_member_is_added_and_removed_from_the_cluster_page() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    // A fourth member on the group's next loopback address, started to join.
    let [a, b, c, _] = cluster.member(1)?.ip.octets();
    let ip = std::net::Ipv4Addr::new(a, b, c, 4);
    let dir = tempfile::tempdir()?;
    let (remoting, raft, admin) = (
        format!("{ip}:{}", raftmq_tests::cluster::REMOTING_PORT),
        format!("{ip}:{}", raftmq_tests::cluster::RAFT_PORT),
        format!("{ip}:{}", raftmq_tests::cluster::ADMIN_PORT),
    );
    let mqbroker = raftmq_tests::workspace_binary("raftmq-server", "mqbroker")?;
    let namesrv = cluster.namesrv_addr.to_string();
    let data_dir = dir.path().display().to_string();
    let mut joiner = raftmq_tests::Process::spawn(
        &mqbroker,
        &[
            "-n",
            &namesrv,
            "--broker-name",
            "broker-a",
            "--node-id",
            "4",
            "--join",
            "--listen",
            &remoting,
            "--raft-listen",
            &raft,
            "--admin-listen",
            &admin,
            // No gRPC client in this test: any free port.
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ],
    )?;
    joiner.wait_for_stdout_line(|line| line.starts_with("mqbroker listening"), START_TIMEOUT)?;

    let ui = cluster.namesrv_admin;
    let added = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "add_member"),
            ("group", "broker-a"),
            ("node", "4"),
            ("raft_addr", &raft),
        ],
    )?;
    assert!(added.contains("node 4 is a voter of broker-a"), "{added}");
    // The new member registers once it is a member; then the page lists it as a voter.
    wait_until(STEP, || {
        let html = cluster.admin.page(ui, "/ui/cluster")?;
        Ok(html.contains(r#"data-node="4""#) && html.contains(&remoting))
    })?;
    let status = cluster.admin.raft_status(cluster.member(1)?.admin())?;
    assert!(status.voters.contains(&4), "{status:?}");

    let removed = confirmed_action(
        &cluster,
        ui,
        &[
            ("action", "remove_member"),
            ("group", "broker-a"),
            ("node", "4"),
        ],
    )?;
    assert!(removed.contains("node 4 left broker-a"), "{removed}");
    // The action unregistered it from the NameServer (as `mq cluster remove-member` does), so
    // routes and the page no longer list it, even while its process still runs.
    let listed = cluster.admin.brokers(cluster.namesrv_admin)?;
    assert!(
        listed
            .iter()
            .flat_map(|group| &group.members)
            .all(|member| member.addr != remoting),
        "{listed:?}"
    );
    assert!(
        !cluster
            .admin
            .page(ui, "/ui/cluster")?
            .contains(r#"data-node="4""#)
    );
    let status = cluster.admin.raft_status(cluster.member(1)?.admin())?;
    assert!(!status.voters.contains(&4), "{status:?}");
    joiner.terminate()?;
    Ok(())
}
