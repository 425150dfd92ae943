//! Talking to the NameServers: the address list (`-n a;b`, `NAMESRV_ADDR`) and
//! [`NameServerClient`], which asks one NameServer and moves on to the next when it cannot be
//! reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::{DeleteTopicFromNamesrvRequestHeader, GetRouteInfoRequestHeader};
use raftmq_protocol::route::{ClusterInfo, TopicList, TopicRouteData};

use crate::error::{ClientError, check_response};
use raftmq_remoting::RpcClient;

/// The environment variable RocketMQ tools read the NameServer list from.
pub const NAMESRV_ADDR_ENV: &str = "NAMESRV_ADDR";

/// How long one NameServer request may take before the next NameServer is tried.
pub const NAMESRV_TIMEOUT: Duration = Duration::from_secs(3);

/// More NameServers than anyone runs: a longer list is a configuration mistake.
pub const MAX_NAMESRV_ADDRS: usize = 64;

/// Parses `host:port;host:port` (also `,`-separated, spaces ignored).
pub fn parse_namesrv_list(list: &str) -> Result<Vec<String>, ClientError> {
    let addrs: Vec<String> = list
        .split([';', ','])
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::Config(format!(
            "no NameServer address in {list:?} (expected host:port[;host:port])"
        )));
    }
    if addrs.len() > MAX_NAMESRV_ADDRS {
        return Err(ClientError::Config(format!(
            "{} NameServer addresses, more than {MAX_NAMESRV_ADDRS}",
            addrs.len()
        )));
    }
    for addr in &addrs {
        let port = addr
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port));
        if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
            return Err(ClientError::Config(format!(
                "NameServer address {addr:?} is not host:port"
            )));
        }
    }
    Ok(addrs)
}

/// The NameServer list given, or else the one in `NAMESRV_ADDR`.
pub fn namesrv_list_or_env(given: Option<&str>) -> Result<Vec<String>, ClientError> {
    match given {
        Some(list) => parse_namesrv_list(list),
        None => match std::env::var(NAMESRV_ADDR_ENV) {
            Ok(list) => parse_namesrv_list(&list),
            Err(_) => Err(ClientError::Config(format!(
                "no NameServer given: pass one (host:port[;host:port]) or set {NAMESRV_ADDR_ENV}"
            ))),
        },
    }
}

/// Requests to the NameServers. It sticks to one NameServer while it answers and moves to the
/// next one when it cannot be reached. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NameServerClient {
    rpc: RpcClient,
    addrs: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    timeout: Duration,
}

impl NameServerClient {
    pub fn new(rpc: RpcClient, addrs: Vec<String>) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Config("no NameServer address".to_owned()));
        }
        Ok(NameServerClient {
            rpc,
            addrs: Arc::new(addrs),
            current: Arc::new(AtomicUsize::new(0)),
            timeout: NAMESRV_TIMEOUT,
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Sends `request` to the current NameServer, then to each other one in turn while they
    /// cannot be reached. Any answer (even a refusal) ends the search.
    pub async fn invoke(
        &self,
        request: RemotingCommand,
    ) -> Result<(String, RemotingCommand), ClientError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.addrs.len() {
            let index = (start + step) % self.addrs.len();
            let addr = &self.addrs[index];
            match self.rpc.invoke(addr, request.clone(), self.timeout).await {
                Ok(answer) => {
                    if step > 0 {
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok((addr.clone(), answer));
                }
                Err(error) => {
                    tracing::debug!(addr, %error, "NameServer request failed; trying the next one");
                    last = Some(error);
                }
            }
        }
        match last {
            Some(last) => Err(ClientError::NameServerUnavailable {
                tried: self.addrs.len(),
                last,
            }),
            None => Err(ClientError::Config("no NameServer address".to_owned())),
        }
    }

    /// The route of `topic`; `Ok(None)` when the NameServer does not know the topic.
    pub async fn topic_route(&self, topic: &str) -> Result<Option<TopicRouteData>, ClientError> {
        let command = RemotingCommand::new_request(request::GET_ROUTEINFO_BY_TOPIC).with_header(
            &GetRouteInfoRequestHeader {
                topic: topic.to_owned(),
                accept_standard_json_only: None,
            },
        );
        let (addr, answer) = self.invoke(command).await?;
        if answer.code == response::TOPIC_NOT_EXIST {
            return Ok(None);
        }
        let answer = check_response(
            &addr,
            request::GET_ROUTEINFO_BY_TOPIC,
            answer,
            &[response::SUCCESS],
        )?;
        TopicRouteData::decode(&answer.body)
            .map(Some)
            .map_err(|error| ClientError::bad_response(&addr, error))
    }

    /// Every broker group and cluster the NameServer knows.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, ClientError> {
        let command = RemotingCommand::new_request(request::GET_BROKER_CLUSTER_INFO);
        let (addr, answer) = self.invoke(command).await?;
        let answer = check_response(
            &addr,
            request::GET_BROKER_CLUSTER_INFO,
            answer,
            &[response::SUCCESS],
        )?;
        ClusterInfo::decode(&answer.body).map_err(|error| ClientError::bad_response(&addr, error))
    }

    /// Every topic the NameServer knows.
    pub async fn topic_list(&self) -> Result<TopicList, ClientError> {
        let command = RemotingCommand::new_request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
        let (addr, answer) = self.invoke(command).await?;
        let answer = check_response(
            &addr,
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
            answer,
            &[response::SUCCESS],
        )?;
        TopicList::decode(&answer.body).map_err(|error| ClientError::bad_response(&addr, error))
    }

    /// UNREGISTER_BROKER on every NameServer: routes stop listing the member at once (a member
    /// removed from its group may not learn it was, and would stay listed until it expires).
    pub async fn unregister_broker(
        &self,
        header: &raftmq_protocol::header::UnregisterBrokerRequestHeader,
    ) -> Result<(), ClientError> {
        let command = RemotingCommand::new_request(request::UNREGISTER_BROKER).with_header(header);
        for addr in self.addrs.iter() {
            let answer = self.rpc.invoke(addr, command.clone(), self.timeout).await?;
            check_response(
                addr,
                request::UNREGISTER_BROKER,
                answer,
                &[response::SUCCESS],
            )?;
        }
        Ok(())
    }

    /// Removes `topic` from every NameServer (each keeps its own table, so all are asked);
    /// succeeds when every one answered SUCCESS.
    pub async fn delete_topic(
        &self,
        topic: &str,
        cluster: Option<&str>,
    ) -> Result<(), ClientError> {
        let command = RemotingCommand::new_request(request::DELETE_TOPIC_IN_NAMESRV).with_header(
            &DeleteTopicFromNamesrvRequestHeader {
                topic: topic.to_owned(),
                cluster_name: cluster.map(str::to_owned),
            },
        );
        for addr in self.addrs.iter() {
            let answer = self.rpc.invoke(addr, command.clone(), self.timeout).await?;
            check_response(
                addr,
                request::DELETE_TOPIC_IN_NAMESRV,
                answer,
                &[response::SUCCESS],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rocketmq_style_lists() {
        assert_eq!(
            parse_namesrv_list("127.0.0.1:9876;10.0.0.2:9876").unwrap(),
            vec!["127.0.0.1:9876", "10.0.0.2:9876"]
        );
        assert_eq!(
            parse_namesrv_list(" a:1 , b:2 ;").unwrap(),
            vec!["a:1", "b:2"]
        );
        assert!(parse_namesrv_list("").is_err());
        assert!(parse_namesrv_list(";;").is_err());
        assert!(parse_namesrv_list("hostonly").is_err());
        assert!(parse_namesrv_list(":9876").is_err());
        assert!(parse_namesrv_list("h:99999").is_err());
    }
}
