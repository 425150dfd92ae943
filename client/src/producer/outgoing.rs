//! A message or batch made ready for the wire: validated, given its `UNIQ_KEY`s, properties
//! rendered and (for a batch) encoded once, so every attempt of one send carries the same
//! bytes. [`Target`] says which queue the send goes to.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::message::{BatchMessage, encode_batch, properties, property};

use crate::error::ClientError;
use crate::message::{MAX_MESSAGE_BYTES, Message, MessageQueue, new_unique_id};

/// Messages in one batch (besides the byte cap).
pub const MAX_BATCH_MESSAGES: usize = 4096;

/// Where a send goes.
#[derive(Clone, Debug)]
pub(super) enum Target {
    RoundRobin,
    Key(String),
    Queue(MessageQueue),
}

/// A send ready for the wire: the same bytes go out on every attempt.
pub(super) struct Outgoing {
    pub(super) topic: String,
    pub(super) body: Bytes,
    pub(super) properties: String,
    pub(super) flag: i32,
    pub(super) batch: bool,
    pub(super) msg_ids: Vec<String>,
    pub(super) target: Target,
}

pub(super) fn prepare_single(message: Message, target: Target) -> Result<Outgoing, ClientError> {
    message.validate()?;
    let msg_id = new_unique_id();
    let rendered = properties::render(&message.wire_properties(&msg_id))
        .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
    Ok(Outgoing {
        topic: message.topic,
        body: message.body,
        properties: rendered,
        flag: message.flag,
        batch: false,
        msg_ids: vec![msg_id],
        target,
    })
}

pub(super) fn prepare_batch(messages: Vec<Message>) -> Result<Outgoing, ClientError> {
    let Some(first) = messages.first() else {
        return Err(ClientError::InvalidMessage("the batch is empty".to_owned()));
    };
    if messages.len() > MAX_BATCH_MESSAGES {
        return Err(ClientError::InvalidMessage(format!(
            "{} messages in one batch, more than {MAX_BATCH_MESSAGES}",
            messages.len()
        )));
    }
    let topic = first.topic.clone();
    let target = match &first.sharding_key {
        Some(key) => Target::Key(key.clone()),
        None => Target::RoundRobin,
    };
    let mut msg_ids = Vec::with_capacity(messages.len());
    let mut elements = Vec::with_capacity(messages.len());
    let mut total = 0usize;
    for message in &messages {
        message.validate()?;
        if message.topic != topic {
            return Err(ClientError::InvalidMessage(format!(
                "a batch holds one topic; found {} and {}",
                topic, message.topic
            )));
        }
        total = total.saturating_add(message.body.len());
        if total > MAX_MESSAGE_BYTES {
            return Err(ClientError::MessageTooLarge {
                size: total,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let msg_id = new_unique_id();
        elements.push(BatchMessage {
            flag: message.flag,
            body: message.body.clone(),
            properties: message.wire_properties(&msg_id),
        });
        msg_ids.push(msg_id);
    }
    let mut body = BytesMut::new();
    encode_batch(&elements, &mut body)
        .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ClientError::MessageTooLarge {
            size: body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let batch_properties = BTreeMap::from([(property::WAIT.to_owned(), "true".to_owned())]);
    Ok(Outgoing {
        topic,
        body: body.freeze(),
        properties: properties::render(&batch_properties)
            .map_err(|error| ClientError::InvalidMessage(error.to_string()))?,
        flag: 0,
        batch: true,
        msg_ids,
        target,
    })
}
