//! The settings the server answers a client's Settings with on its Telemetry stream: what the
//! official clients insist on (a producer's body size limit and attempts, a consumer's backoff,
//! batch size and long-polling timeout), the rest echoed from the client.

use std::time::Duration;

use super::pb::{
    self, CustomizedBackoff, ExponentialBackoff, RetryPolicy, retry_policy, settings::PubSub,
};
use crate::config::BrokerConfig;

/// Attempts of one send (the first and two retries), as the proxy's default.
pub const PRODUCER_MAX_ATTEMPTS: i32 = 3;
/// A producer's first retry waits this long, doubling up to [`PRODUCER_BACKOFF_MAX`].
pub const PRODUCER_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
pub const PRODUCER_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Messages one receive may return (the proxy's default).
pub const RECEIVE_BATCH_SIZE: i32 = 32;
/// A receive's long poll is held at least / at most this long (the proxy clamps to 5-20 s).
pub const LONG_POLLING_MIN: Duration = Duration::from_secs(5);
pub const LONG_POLLING_MAX: Duration = Duration::from_secs(20);
/// Deliveries of a message before it goes to the dead-letter queue: RocketMQ's 16 reconsumes
/// plus the first delivery.
pub const CONSUMER_MAX_ATTEMPTS: i32 = 17;
/// RocketMQ's retries start at delay level 3 (10 s), skipping 1 s and 5 s.
const RETRY_FIRST_DELAY_LEVEL: u32 = 3;

fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    }
}

fn std_duration(value: &prost_types::Duration) -> Duration {
    if value.seconds < 0 || value.nanos < 0 {
        return Duration::ZERO;
    }
    Duration::new(value.seconds as u64, value.nanos as u32)
}

/// A long-polling timeout a client asked for, clamped to what the server holds.
pub fn long_polling(requested: Option<&prost_types::Duration>) -> Duration {
    requested
        .map(std_duration)
        .unwrap_or(LONG_POLLING_MAX)
        .clamp(LONG_POLLING_MIN, LONG_POLLING_MAX)
}

/// The server's answer to a client's settings.
pub fn answer(client: &pb::Settings, config: &BrokerConfig) -> pb::Settings {
    let mut settings = client.clone();
    match &mut settings.pub_sub {
        Some(PubSub::Publishing(publishing)) => {
            publishing.max_body_size = i32::try_from(config.max_message_bytes).unwrap_or(i32::MAX);
            let attempts = client
                .backoff_policy
                .as_ref()
                .map_or(0, |policy| policy.max_attempts);
            settings.backoff_policy = Some(RetryPolicy {
                max_attempts: if attempts > 0 {
                    attempts
                } else {
                    PRODUCER_MAX_ATTEMPTS
                },
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    ExponentialBackoff {
                        initial: Some(duration(PRODUCER_BACKOFF_INITIAL)),
                        max: Some(duration(PRODUCER_BACKOFF_MAX)),
                        multiplier: 2.0,
                    },
                )),
            });
        }
        Some(PubSub::Subscription(subscription)) => {
            subscription.fifo = Some(subscription.fifo.unwrap_or(false));
            subscription.receive_batch_size = Some(RECEIVE_BATCH_SIZE);
            subscription.long_polling_timeout = Some(duration(long_polling(
                subscription.long_polling_timeout.as_ref(),
            )));
            let levels = &config.delay_levels;
            let next = (RETRY_FIRST_DELAY_LEVEL..=levels.count())
                .filter_map(|level| levels.delay(level))
                .map(duration)
                .collect();
            settings.backoff_policy = Some(RetryPolicy {
                max_attempts: CONSUMER_MAX_ATTEMPTS,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    CustomizedBackoff { next },
                )),
            });
        }
        None => {}
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, BrokerOptions};

    fn config() -> BrokerConfig {
        BrokerConfig::from_options(BrokerOptions {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            ..BrokerOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn a_producer_gets_the_body_limit_and_attempts() {
        let client = pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: "T".into(),
                }],
                max_body_size: 0,
                validate_message_type: false,
            })),
            ..pb::Settings::default()
        };
        let answer = answer(&client, &config());
        let Some(PubSub::Publishing(publishing)) = &answer.pub_sub else {
            panic!("no publishing settings: {answer:?}");
        };
        assert_eq!(publishing.max_body_size, 4 << 20);
        assert_eq!(publishing.topics[0].name, "T");
        let policy = answer.backoff_policy.unwrap();
        assert_eq!(policy.max_attempts, PRODUCER_MAX_ATTEMPTS);
        assert!(matches!(
            policy.strategy,
            Some(retry_policy::Strategy::ExponentialBackoff(_))
        ));
    }

    #[test]
    fn a_consumer_gets_a_backoff_batch_size_and_clamped_long_poll() {
        let client = pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            pub_sub: Some(PubSub::Subscription(pb::Subscription {
                long_polling_timeout: Some(duration(Duration::from_secs(60))),
                ..pb::Subscription::default()
            })),
            ..pb::Settings::default()
        };
        let answer = answer(&client, &config());
        let Some(PubSub::Subscription(subscription)) = &answer.pub_sub else {
            panic!("no subscription settings: {answer:?}");
        };
        assert_eq!(subscription.receive_batch_size, Some(RECEIVE_BATCH_SIZE));
        assert_eq!(
            subscription.long_polling_timeout,
            Some(duration(LONG_POLLING_MAX))
        );
        assert_eq!(subscription.fifo, Some(false));
        let policy = answer.backoff_policy.unwrap();
        assert_eq!(policy.max_attempts, CONSUMER_MAX_ATTEMPTS);
        let Some(retry_policy::Strategy::CustomizedBackoff(backoff)) = policy.strategy else {
            panic!("not a customized backoff");
        };
        assert_eq!(backoff.next[0], duration(Duration::from_secs(10)));
        assert_eq!(long_polling(None), LONG_POLLING_MAX);
        assert_eq!(
            long_polling(Some(&duration(Duration::from_secs(1)))),
            LONG_POLLING_MIN
        );
    }
}
