//! [`AdminHttp`]: `raftmq_client::AdminHttpClient` (the one admin HTTP client) for the
//! harness's synchronous code: each call runs on a small runtime of its own and the calling
//! thread waits for the answer.
//!
//! Why not `reqwest::blocking`: it panics when called from inside an async runtime, and tests
//! call the harness from `#[tokio::test]` functions too. A call here is spawned onto one
//! process-wide runtime (one worker thread, started at the first call, living as long as the
//! test process) and its answer comes back over a channel; waiting on a channel works on any
//! thread, async or not, and the client's own deadline bounds every call.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::anyhow;
use raftmq_client::{AdminHttpClient, AdminHttpError};
use raftmq_protocol::admin::{AddLearner, RaftStatus, RegisteredGroup, Routes, TopicStatus};
use tokio::runtime::Runtime;

/// How much longer than the client's deadline the caller waits for a call's answer before it
/// gives up on the runtime (the deadline itself ends every call).
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// The runtime admin calls run on, or why it could not be started.
fn runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("admin-http")
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(|err| anyhow!("cannot start the admin HTTP runtime: {err}"))
}

/// Blocking admin HTTP calls, each to the address it is given.
#[derive(Clone, Debug)]
pub struct AdminHttp {
    client: AdminHttpClient,
}

impl AdminHttp {
    /// A client whose every call ends within `timeout`.
    pub fn new(timeout: Duration) -> anyhow::Result<AdminHttp> {
        Ok(AdminHttp {
            client: AdminHttpClient::new()?.with_timeout(timeout),
        })
    }

    /// The same client over HTTPS (`tls`: a cluster whose admin ports serve TLS).
    pub fn with_tls(&self, tls: &raftmq_tls::TlsConnector) -> anyhow::Result<AdminHttp> {
        Ok(AdminHttp {
            client: self.client.with_tls(tls)?,
        })
    }

    /// `GET /healthz` (broker or NameServer).
    pub fn healthz(&self, addr: SocketAddr) -> anyhow::Result<String> {
        self.call(
            addr,
            |client, addr| async move { client.healthz(&addr).await },
        )
    }

    /// `GET /metrics` (broker or NameServer).
    pub fn metrics(&self, addr: SocketAddr) -> anyhow::Result<String> {
        self.call(
            addr,
            |client, addr| async move { client.metrics(&addr).await },
        )
    }

    /// `GET /raft` of a broker member.
    pub fn raft_status(&self, addr: SocketAddr) -> anyhow::Result<RaftStatus> {
        self.call(addr, |client, addr| async move {
            client.raft_status(&addr).await
        })
    }

    /// `GET /topics` of a broker member: each topic's queues, offsets and bytes.
    pub fn topics(&self, addr: SocketAddr) -> anyhow::Result<Vec<TopicStatus>> {
        self.call(
            addr,
            |client, addr| async move { client.topics(&addr).await },
        )
    }

    /// `POST /raft/add-learner` on a group's leader: answers once the learner caught up.
    pub fn add_learner(
        &self,
        leader: SocketAddr,
        node_id: u64,
        raft: SocketAddr,
    ) -> anyhow::Result<()> {
        let request = AddLearner {
            node_id,
            addr: raft.to_string(),
        };
        self.call(leader, move |client, addr| async move {
            client.add_learner(&addr, &request).await.map(|_| ())
        })
    }

    /// `POST /acl` on a group's leader, with the admin token the members were started with.
    pub fn change_acl(
        &self,
        leader: SocketAddr,
        token: raftmq_protocol::admin::AdminToken,
        change: raftmq_protocol::acl::AclChange,
    ) -> anyhow::Result<()> {
        let client = self.client.with_token(Some(token));
        let http = AdminHttp { client };
        http.call(leader, move |client, addr| async move {
            client.change_acl(&addr, &change).await.map(|_| ())
        })
    }

    /// `GET /routes` of a NameServer.
    pub fn routes(&self, addr: SocketAddr) -> anyhow::Result<Routes> {
        self.call(
            addr,
            |client, addr| async move { client.routes(&addr).await },
        )
    }

    /// `GET /brokers` of a NameServer.
    pub fn brokers(&self, addr: SocketAddr) -> anyhow::Result<Vec<RegisteredGroup>> {
        self.call(
            addr,
            |client, addr| async move { client.brokers(&addr).await },
        )
    }

    /// `GET` of a dashboard page (`/ui/...` with its query), as HTML.
    pub fn page(&self, addr: SocketAddr, path_and_query: &str) -> anyhow::Result<String> {
        let path = path_and_query.to_owned();
        self.call(addr, move |client, addr| async move {
            client.page(&addr, &path).await
        })
    }

    /// `POST` of a dashboard form; the answer's HTML.
    pub fn post_form(
        &self,
        addr: SocketAddr,
        path: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let path = path.to_owned();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        self.call(addr, move |client, addr| async move {
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            client.post_form(&addr, &path, &fields).await
        })
    }

    /// Runs `request(client, addr)` on the admin runtime and waits for its answer.
    fn call<T, F>(
        &self,
        addr: SocketAddr,
        request: impl FnOnce(AdminHttpClient, String) -> F,
    ) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, AdminHttpError>> + Send + 'static,
    {
        let runtime = runtime()?;
        let (answer_tx, answer_rx) = std::sync::mpsc::sync_channel(1);
        let call = request(self.client.clone(), addr.to_string());
        runtime.spawn(async move {
            // The caller may have stopped waiting; then nobody needs the answer.
            let _ = answer_tx.send(call.await);
        });
        let wait = self.client.timeout() + ANSWER_GRACE;
        let answer = answer_rx.recv_timeout(wait).map_err(|err| {
            anyhow!("admin HTTP call to {addr}: no answer within {wait:?} ({err})")
        })?;
        Ok(answer?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_listening_is_an_error_from_sync_code() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let admin = AdminHttp::new(Duration::from_secs(2)).unwrap();
        let err = admin.raft_status(addr).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<AdminHttpError>(),
                Some(AdminHttpError::Connect { .. })
            ),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_call_from_inside_an_async_runtime_answers() {
        // A server outside any runtime (as the processes tests start are): one connection,
        // one canned answer.
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
                .unwrap();
        });
        let admin = AdminHttp::new(Duration::from_secs(5)).unwrap();
        // A blocking call on the test's runtime thread, as tests/it/namesrv.rs makes: it must
        // answer, not panic.
        assert_eq!(admin.healthz(addr).unwrap(), "ok\n");
        server.join().unwrap();
    }
}
