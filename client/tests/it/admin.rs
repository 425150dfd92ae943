//! Admin scenarios: topic creation and deletion, offsets, pulls from a named member.

use raftmq_client::broker_client::PullStatus;
use raftmq_client::{Admin, Message, MessageQueue, Producer};
use raftmq_protocol::route::TopicConfig;

use crate::support::{FakeBroker, FakeNamesrv, Group, route};

#[tokio::test]
async fn topics_offsets_and_pulls_through_the_admin() {
    let namesrv = FakeNamesrv::start().await;
    let leader = FakeBroker::start("broker-a").await;
    let follower = FakeBroker::start("broker-a").await;
    // The cluster is known through an existing topic's route.
    namesrv.set_route(
        "TBW102",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &leader.addr), (2, &follower.addr)],
            queues: 8,
        }]),
    );
    let admin = Admin::new(Some(&namesrv.addr)).unwrap();
    let info = admin.cluster_info().await.unwrap();
    assert!(info.broker_addr_table.contains_key("broker-a"));

    let created = admin
        .create_topic(&TopicConfig::new("Orders", 2), Some("DefaultCluster"))
        .await
        .unwrap();
    assert_eq!(created, vec!["broker-a"]);
    assert_eq!(leader.state.topics.lock().unwrap().get("Orders"), Some(&2));
    assert!(
        follower.state.topics.lock().unwrap().is_empty(),
        "created on the leader only"
    );
    assert!(
        admin
            .create_topic(&TopicConfig::new("X", 1), Some("nope"))
            .await
            .is_err()
    );

    // The brokers would register the topic; the fake NameServer is told by hand.
    namesrv.set_route(
        "Orders",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &leader.addr), (2, &follower.addr)],
            queues: 2,
        }]),
    );
    let producer = Producer::builder()
        .namesrv(&namesrv.addr)
        .build()
        .await
        .unwrap();
    let queue = MessageQueue {
        topic: "Orders".into(),
        broker_name: "broker-a".into(),
        queue_id: 1,
    };
    for i in 0..5 {
        producer
            .send_to_queue(Message::new("Orders", format!("o{i}")), queue.clone())
            .await
            .unwrap();
    }
    let statuses = admin.queue_offsets("Orders").await.unwrap();
    let offsets: Vec<(i32, i64, i64)> = statuses
        .iter()
        .map(|s| (s.queue.queue_id, s.min_offset, s.max_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 0, 0), (1, 0, 5)]);

    let pulled = admin.pull(&queue, 1, 2).await.unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    let bodies: Vec<_> = pulled.messages.iter().map(|m| m.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![bytes::Bytes::from("o1"), bytes::Bytes::from("o2")]
    );
    assert_eq!(pulled.next_begin_offset, 3);
    let all = admin
        .read_queue(&leader.addr, &queue, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        admin
            .read_queue(&leader.addr, &queue, 0, 3)
            .await
            .unwrap()
            .len(),
        3
    );
    // The follower holds nothing (the fake does not replicate): reading it says so.
    follower.state.create_topic("Orders", 2);
    assert!(
        admin
            .read_queue(&follower.addr, &queue, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let empty = admin
        .pull_from(&follower.addr, &queue, 0, 10)
        .await
        .unwrap();
    assert_eq!(empty.status, PullStatus::NoNewMessages);

    let first_store = all[0].store_timestamp;
    assert_eq!(admin.search_offset(&queue, first_store).await.unwrap(), 0);
    assert_eq!(admin.search_offset(&queue, i64::MAX).await.unwrap(), 5);

    admin.commit_offset("g", &queue, 4).await.unwrap();
    let committed = admin.consumer_offsets("g", "Orders").await.unwrap();
    assert_eq!(committed.get(&queue), Some(&Some(4)));
    assert_eq!(committed.values().filter(|o| o.is_none()).count(), 1);
    assert!(admin.consumer_list("g", "Orders").await.unwrap().is_empty());

    admin.delete_topic("Orders").await.unwrap();
    assert!(admin.route("Orders").await.unwrap().is_none());
    assert!(!leader.state.topics.lock().unwrap().contains_key("Orders"));
    assert!(admin.queue_offsets("Orders").await.is_err());

    producer.shutdown().await;
    admin.shutdown().await;
    leader.stop().await;
    follower.stop().await;
    namesrv.stop().await;
}
