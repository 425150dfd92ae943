//! The `mqnamesrv` binary as a process: two broker groups registered over TCP with remoting
//! frames, read back through GET_ROUTEINFO_BY_TOPIC and the admin HTTP endpoints; term
//! fencing and leadership moves seen through the route; malformed, truncated and oversized
//! frames answered or closed while other connections keep being served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::frame::{self, MAX_FRAME_BYTES};
use raftmq_protocol::header::{GetRouteInfoRequestHeader, RegisterBrokerRequestHeader};
use raftmq_protocol::route::{
    ClusterInfo, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper,
    TopicList, TopicRouteData,
};
use raftmq_protocol::{RemotingCommand, SerializeType};
use raftmq_tests::{AdminHttp, Process, wait_until, workspace_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every single wait in these tests.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

const CLUSTER: &str = "DefaultCluster";
const A1: &str = "127.0.0.1:20911";
const A2: &str = "127.0.0.1:20921";
const B0: &str = "127.0.0.1:30911";

struct NameServer {
    process: Process,
    remoting: SocketAddr,
    admin: SocketAddr,
}

/// Starts `mqnamesrv` on ephemeral ports and reads the addresses it announces.
fn start_namesrv() -> anyhow::Result<NameServer> {
    let binary = workspace_binary("raftmq-server", "mqnamesrv")?;
    let mut process = Process::spawn(
        &binary,
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
    )?;
    let line = process
        .wait_for_stdout_line(|line| line.starts_with("mqnamesrv listening"), STEP_TIMEOUT)?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        let value = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} in {line:?}"))?;
        Ok(value.parse()?)
    };
    Ok(NameServer {
        remoting: field("remoting=")?,
        admin: field("admin=")?,
        process,
    })
}

/// A connection speaking raw remoting frames.
struct Conn {
    stream: TcpStream,
    buffer: BytesMut,
    next_opaque: i32,
}

#[derive(Debug)]
enum Read {
    Frame(RemotingCommand),
    Closed,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buffer: BytesMut::new(),
            next_opaque: 1,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn read(&mut self) -> Read {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                match frame::decode_from(&mut self.buffer) {
                    Ok(Some(command)) => return Read::Frame(command),
                    Ok(None) => {}
                    Err(error) => panic!("the server sent a bad frame: {error}"),
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return Read::Closed,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answered or closed in time")
    }

    async fn call(&mut self, mut command: RemotingCommand) -> RemotingCommand {
        command.opaque = self.next_opaque;
        self.next_opaque += 1;
        let mut bytes = BytesMut::new();
        frame::encode(&command, &mut bytes).expect("encode");
        self.send_raw(&bytes).await;
        match self.read().await {
            Read::Frame(answer) => {
                assert!(answer.is_response());
                assert_eq!(answer.opaque, command.opaque, "answer matches the request");
                assert_eq!(
                    answer.serialize_type, command.serialize_type,
                    "answered in the request's encoding"
                );
                answer
            }
            Read::Closed => panic!(
                "connection closed instead of answering code {}",
                command.code
            ),
        }
    }
}

fn register(
    group: &str,
    addr: &str,
    raft: Option<(u64, u64, bool)>,
    topics: &[(&str, u32)],
) -> RemotingCommand {
    let header = RegisterBrokerRequestHeader {
        broker_name: group.into(),
        broker_addr: addr.into(),
        cluster_name: CLUSTER.into(),
        ha_server_addr: String::new(),
        broker_id: match raft {
            Some((_, _, true)) | None => 0,
            Some((node_id, _, false)) => i64::try_from(node_id).unwrap(),
        },
        raft_node_id: raft.map(|(node_id, _, _)| node_id),
        raft_term: raft.map(|(_, term, _)| term),
        raft_leader: raft.map(|(_, _, leader)| leader),
        ..RegisterBrokerRequestHeader::default()
    };
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            topic_config_table: topics
                .iter()
                .map(|(topic, queues)| ((*topic).to_owned(), TopicConfig::new(*topic, *queues)))
                .collect(),
            data_version: DataVersion::default(),
        },
        filter_server_list: vec![],
    };
    RemotingCommand::new_request(request::REGISTER_BROKER)
        .with_header(&header)
        .with_body(body.encode().unwrap())
}

async fn route(conn: &mut Conn, topic: &str) -> Result<TopicRouteData, i32> {
    let answer = conn
        .call(
            RemotingCommand::new_request(request::GET_ROUTEINFO_BY_TOPIC).with_header(
                &GetRouteInfoRequestHeader {
                    topic: topic.into(),
                    accept_standard_json_only: None,
                },
            ),
        )
        .await;
    if answer.code != response::SUCCESS {
        return Err(answer.code);
    }
    Ok(TopicRouteData::decode(&answer.body).expect("route JSON"))
}

fn addrs(route: &TopicRouteData, group: &str) -> BTreeMap<u64, String> {
    route
        .broker_datas
        .iter()
        .find(|data| data.broker_name == group)
        .map(|data| data.broker_addrs.clone())
        .unwrap_or_default()
}

fn members(pairs: &[(u64, &str)]) -> BTreeMap<u64, String> {
    pairs
        .iter()
        .map(|(id, addr)| (*id, (*addr).to_owned()))
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

#[tokio::test]
async fn namesrv_routes_two_groups_with_cached_leadership() {
    let mut namesrv = start_namesrv().expect("mqnamesrv starts");

    // Group broker-a: a 2-member Raft group, leader node 1 in term 3 (JSON headers).
    let mut a1 = Conn::open(namesrv.remoting).await;
    let mut a2 = Conn::open(namesrv.remoting).await;
    let a_topics = [("TopicA", 4), ("TBW102", 8)];
    let answer = a1
        .call(register("broker-a", A1, Some((1, 3, true)), &a_topics))
        .await;
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    assert_eq!(answer.ext("masterAddr"), Some(A1));
    let answer = a2
        .call(register("broker-a", A2, Some((2, 3, false)), &a_topics))
        .await;
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    assert_eq!(answer.ext("masterAddr"), Some(A1));

    // Group broker-b: a plain RocketMQ broker, binary ROCKETMQ headers.
    let mut b0 = Conn::open(namesrv.remoting).await;
    let answer = b0
        .call(
            register("broker-b", B0, None, &[("TopicA", 2), ("TopicB", 2)])
                .with_serialize_type(SerializeType::RocketMq),
        )
        .await;
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);

    let mut client = Conn::open(namesrv.remoting).await;
    let topic_a = route(&mut client, "TopicA")
        .await
        .expect("TopicA has a route");
    assert_eq!(topic_a.queue_datas.len(), 2);
    let queues: BTreeMap<_, _> = topic_a
        .queue_datas
        .iter()
        .map(|queue| {
            (
                queue.broker_name.as_str(),
                (queue.read_queue_nums, queue.write_queue_nums, queue.perm),
            )
        })
        .collect();
    assert_eq!(queues["broker-a"], (4, 4, 6));
    assert_eq!(queues["broker-b"], (2, 2, 6));
    assert_eq!(addrs(&topic_a, "broker-a"), members(&[(0, A1), (2, A2)]));
    assert_eq!(addrs(&topic_a, "broker-b"), members(&[(0, B0)]));
    assert!(
        topic_a
            .broker_datas
            .iter()
            .all(|data| data.cluster == CLUSTER)
    );

    let topic_b = route(&mut client, "TopicB")
        .await
        .expect("TopicB has a route");
    assert_eq!(topic_b.broker_datas.len(), 1);
    assert_eq!(addrs(&topic_b, "broker-b"), members(&[(0, B0)]));
    let tbw = route(&mut client, "TBW102")
        .await
        .expect("the auto-create route");
    assert_eq!(addrs(&tbw, "broker-a"), members(&[(0, A1), (2, A2)]));
    assert_eq!(
        route(&mut client, "NoSuchTopic").await.unwrap_err(),
        response::TOPIC_NOT_EXIST
    );

    // A stale leadership claim (term 2 < 3) does not take slot 0.
    let answer = a2
        .call(register("broker-a", A2, Some((2, 2, true)), &a_topics))
        .await;
    assert_eq!(answer.code, response::SUCCESS);
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("fenced")
    );
    assert_eq!(
        addrs(&route(&mut client, "TopicA").await.unwrap(), "broker-a"),
        members(&[(0, A1), (2, A2)])
    );
    // Node 2 wins term 4: it takes slot 0, node 1 moves to its node id...
    a2.call(register("broker-a", A2, Some((2, 4, true)), &a_topics))
        .await;
    assert_eq!(
        addrs(&route(&mut client, "TopicA").await.unwrap(), "broker-a"),
        members(&[(0, A2), (1, A1)])
    );
    // ...and node 1, still believing it leads in term 3, cannot take it back.
    let answer = a1
        .call(register("broker-a", A1, Some((1, 3, true)), &a_topics))
        .await;
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("fenced")
    );
    assert_eq!(answer.ext("masterAddr"), Some(A2));
    assert_eq!(
        addrs(&route(&mut client, "TopicA").await.unwrap(), "broker-a"),
        members(&[(0, A2), (1, A1)])
    );

    let info = client
        .call(RemotingCommand::new_request(
            request::GET_BROKER_CLUSTER_INFO,
        ))
        .await;
    let info = ClusterInfo::decode(&info.body).expect("cluster info JSON");
    assert_eq!(
        info.cluster_addr_table[CLUSTER]
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["broker-a".to_owned(), "broker-b".to_owned()]
    );
    assert_eq!(
        info.broker_addr_table["broker-a"].broker_addrs,
        members(&[(0, A2), (1, A1)])
    );
    let topics = client
        .call(RemotingCommand::new_request(
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
        ))
        .await;
    let topics = TopicList::decode(&topics.body).expect("topic list JSON");
    assert_eq!(
        topics.topic_list.into_iter().collect::<Vec<_>>(),
        vec![
            "TBW102".to_owned(),
            "TopicA".to_owned(),
            "TopicB".to_owned()
        ]
    );
    let unknown = client.call(RemotingCommand::new_request(9999)).await;
    assert_eq!(unknown.code, response::REQUEST_CODE_NOT_SUPPORTED);

    // The admin endpoints show the same.
    let admin = AdminHttp::new(STEP_TIMEOUT).unwrap();
    assert_eq!(admin.healthz(namesrv.admin).unwrap().trim(), "ok");
    let routes = admin.routes(namesrv.admin).unwrap();
    assert_eq!(routes["TopicA"].broker_datas.len(), 2);
    assert_eq!(
        routes["TopicB"].broker_datas[0].broker_addrs.get(&0),
        Some(&B0.to_owned())
    );
    let brokers = admin.brokers(namesrv.admin).unwrap();
    let group_a = brokers
        .iter()
        .find(|group| group.broker_name == "broker-a")
        .expect("broker-a listed");
    assert_eq!(group_a.leader.as_deref(), Some(A2));
    assert_eq!(group_a.term, 4);
    assert_eq!(group_a.members.len(), 2);
    for member in &group_a.members {
        assert!(member.last_registration_age_ms < 60_000);
    }
    let metrics = admin.metrics(namesrv.admin).unwrap();
    assert_eq!(metric(&metrics, "raftmq_namesrv_registrations_total"), 6.0);
    assert_eq!(
        metric(&metrics, "raftmq_namesrv_fenced_leadership_claims_total"),
        2.0
    );
    assert_eq!(metric(&metrics, "raftmq_namesrv_broker_groups"), 2.0);

    // broker-b's connection closes: it is dropped at once, not after 120 s.
    drop(b0);
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if route(&mut client, "TopicB").await == Err(response::TOPIC_NOT_EXIST) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker-b still routed after its connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let topic_a = route(&mut client, "TopicA").await.unwrap();
    assert_eq!(topic_a.broker_datas.len(), 1);

    let status = namesrv
        .process
        .terminate()
        .expect("mqnamesrv stops on SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        namesrv.process.log_tail()
    );
}

fn frame_with(total: i32, marker: i32, header: &[u8]) -> Vec<u8> {
    let mut bytes = total.to_be_bytes().to_vec();
    bytes.extend_from_slice(&marker.to_be_bytes());
    bytes.extend_from_slice(header);
    bytes
}

fn json_frame(header: &[u8]) -> Vec<u8> {
    frame_with(4 + header.len() as i32, header.len() as i32, header)
}

#[tokio::test]
async fn namesrv_survives_malformed_truncated_and_oversized_frames() {
    let mut namesrv = start_namesrv().expect("mqnamesrv starts");
    let mut good = Conn::open(namesrv.remoting).await;
    let info = good
        .call(RemotingCommand::new_request(
            request::GET_BROKER_CLUSTER_INFO,
        ))
        .await;
    assert_eq!(info.code, response::SUCCESS);

    let closing_inputs: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversized length",
            frame_with(MAX_FRAME_BYTES as i32 + 1, 0, b""),
        ),
        ("negative length", frame_with(-1, 0, b"")),
        ("unknown serialize type", frame_with(6, 0x0500_0002, b"{}")),
        ("malformed JSON header", json_frame(b"{not json}")),
        (
            "JSON header without a code",
            json_frame(br#"{"opaque":1,"flag":0}"#),
        ),
        ("header longer than the frame", frame_with(8, 100, b"{}{}")),
        (
            "binary header cut short",
            frame_with(7, 0x0100_0003, &[0, 1, 2]),
        ),
    ];
    let malformed = closing_inputs.len();
    for (what, bytes) in closing_inputs {
        let mut bad = Conn::open(namesrv.remoting).await;
        bad.send_raw(&bytes).await;
        assert!(
            matches!(bad.read().await, Read::Closed),
            "{what}: connection not closed"
        );
        // Other connections keep being served.
        let answer = good
            .call(RemotingCommand::new_request(
                request::GET_BROKER_CLUSTER_INFO,
            ))
            .await;
        assert_eq!(answer.code, response::SUCCESS, "after {what}");
    }

    // Half a frame, then the client stops sending: the server closes when the client does,
    // and keeps serving others meanwhile.
    let mut whole = BytesMut::new();
    frame::encode(
        &RemotingCommand::new_request(request::GET_BROKER_CLUSTER_INFO),
        &mut whole,
    )
    .unwrap();
    let mut truncated = Conn::open(namesrv.remoting).await;
    truncated.send_raw(&whole[..whole.len() / 2]).await;
    let answer = good
        .call(RemotingCommand::new_request(
            request::GET_BROKER_CLUSTER_INFO,
        ))
        .await;
    assert_eq!(
        answer.code,
        response::SUCCESS,
        "served while a frame is half sent"
    );
    truncated.stream.shutdown().await.unwrap();
    assert!(matches!(truncated.read().await, Read::Closed));

    // Well-framed requests with bad content are answered, with the reason.
    let mut missing = RemotingCommand::new_request(request::REGISTER_BROKER);
    missing
        .ext_fields
        .insert("brokerName".into(), "broker-x".into());
    let answer = good.call(missing).await;
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("brokerAddr"),
        "the remark names the missing field"
    );
    let answer = good
        .call(RemotingCommand::new_request(
            request::GET_ROUTEINFO_BY_TOPIC,
        ))
        .await;
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("topic"),
        "the remark names the field"
    );
    let bad_body =
        register("broker-x", "127.0.0.1:1", Some((1, 1, true)), &[]).with_body(&b"{not json"[..]);
    let answer = good.call(bad_body).await;
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert_eq!(
        good.call(RemotingCommand::new_request(-7)).await.code,
        response::REQUEST_CODE_NOT_SUPPORTED
    );

    // A fresh connection works, the process is up, and the metrics counted the bad frames.
    let mut fresh = Conn::open(namesrv.remoting).await;
    assert_eq!(
        fresh
            .call(RemotingCommand::new_request(
                request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER
            ))
            .await
            .code,
        response::SUCCESS
    );
    assert!(
        namesrv.process.try_status().unwrap().is_none(),
        "mqnamesrv is still running"
    );
    let admin = AdminHttp::new(STEP_TIMEOUT).unwrap();
    wait_until(STEP_TIMEOUT, || {
        let text = admin.metrics(namesrv.admin)?;
        Ok(metric(&text, "raftmq_namesrv_connections_closed_malformed") >= malformed as f64)
    })
    .expect("malformed connections counted");

    let status = namesrv
        .process
        .terminate()
        .expect("mqnamesrv stops on SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        namesrv.process.log_tail()
    );
}
