//! W2: producers sending in order per sharding key on [`W2_TOPIC`].
//!
//! Producer `pN` owns [`KEYS_PER_PRODUCER`] sharding keys and sends values `pN-0`, `pN-1`, ...
//! one synchronous send at a time, alternating keys. A key maps to one queue, so every
//! acknowledged send of `pN` to a queue must sit at a higher offset than the ones it
//! acknowledged there before (`send_order`); consumers in W1/W3 and the final drain see the
//! order the broker kept.

use super::{Shared, W2_TOPIC, recorded_send};
use crate::history::RecordError;

/// Producers of W2.
pub const W2_PRODUCERS: usize = 3;
/// Sharding keys per producer.
pub const KEYS_PER_PRODUCER: usize = 2;

/// Runs producer `id` until `shared.stop`.
pub async fn run_producer(shared: Shared, id: usize) -> Result<(), RecordError> {
    let process = format!("p{id}");
    let producer = match shared.producer(&format!("jl-w2-{process}")).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(producer = %process, error = %e, "cannot build a producer");
            return Ok(());
        }
    };
    let keys: Vec<String> = (0..KEYS_PER_PRODUCER)
        .map(|k| format!("{process}-k{k}"))
        .collect();
    let mut sent = 0u64;
    let result = async {
        while !shared.stop.is_cancelled() {
            let key = &keys[(sent as usize) % keys.len()];
            let value = format!("{process}-{sent}");
            sent += 1;
            recorded_send(&shared, &producer, &process, W2_TOPIC, Some(key), value).await?;
            if !shared.think().await {
                break;
            }
        }
        Ok(())
    }
    .await;
    producer.shutdown().await;
    result
}
