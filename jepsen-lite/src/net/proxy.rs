//! The fallback network: one TCP proxy per directed link, on 127.0.0.1.
//!
//! The harness adds a link for every (from, to) pair it wants to control, e.g. ("n1", "n2")
//! with n2's real Raft address, and configures n1 to reach n2 at the returned proxy address.
//! Each connection through a link has two directions: bytes from `from` to `to` obey the faults
//! on (from, to), bytes coming back obey the faults on (to, from). Per direction:
//! - forward: bytes flow;
//! - drop (a partition or one-way cut): the direction stalls. The proxy stops reading (so TCP
//!   back-pressure builds like on a dead link) and holds any bytes already read; after heal they
//!   are delivered, as TCP retransmission would. New connections are accepted but stall too.
//! - lossy: each chunk is delayed by [`LOSSY_DELAY_MS`] with the given probability (bytes
//!   inside a TCP stream cannot be lost, only late, so loss shows up as retransmission delay);
//! - sever ([`ProxyNetwork::sever`]): existing connections between two nodes are closed and new
//!   ones are closed on accept, until heal.
//!
//! Every accept loop and connection is a tracked task with a cancellation token;
//! [`ProxyNetwork::shutdown`] stops them all and waits.
//!
//! A link's source is either fixed ([`ProxyNetwork::add_link`], [`ProxyNetwork::add_link_at`]:
//! only `from` connects there) or resolved per connection ([`ProxyNetwork::add_inbound_at`]):
//! Raft peers reach a member at the one address its membership names, so one proxy serves
//! every source and asks a resolver which node opened each connection (on Linux,
//! [`socket_owner`] finds the process that holds the connecting socket).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Faults, NetError, Network};

/// Connections open at once per link; more are closed on accept.
pub const MAX_CONNECTIONS_PER_LINK: usize = 256;
/// Bytes read per chunk in each direction.
pub const PROXY_CHUNK_BYTES: usize = 16 * 1024;
/// How long the proxy waits to connect to the real target before closing the client side.
pub const TARGET_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Delay of one "lost" chunk on a lossy link.
pub const LOSSY_DELAY_MS: u64 = 200;

/// What the proxies obey: the shared [`Faults`] plus severed node pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProxyFaults {
    faults: Faults,
    /// Unordered pairs, stored (smaller, larger).
    severed: BTreeSet<(String, String)>,
}

impl ProxyFaults {
    fn is_severed(&self, a: &str, b: &str) -> bool {
        let key = if a <= b { (a, b) } else { (b, a) };
        self.severed
            .iter()
            .any(|(x, y)| x.as_str() == key.0 && y.as_str() == key.1)
    }
}

/// TCP proxies for named links. Cheap to clone; all clones control the same links.
#[derive(Clone, Debug)]
pub struct ProxyNetwork {
    faults: Arc<watch::Sender<ProxyFaults>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Default for ProxyNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyNetwork {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(ProxyFaults::default());
        ProxyNetwork {
            faults: Arc::new(tx),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Starts a proxy for the link `from` -> `to` that forwards to `target`. Returns the
    /// address (127.0.0.1, ephemeral port) that `from` must connect to instead of `target`.
    pub async fn add_link(
        &self,
        from: &str,
        to: &str,
        target: SocketAddr,
    ) -> Result<SocketAddr, NetError> {
        self.add_link_at(SocketAddr::from(([127, 0, 0, 1], 0)), from, to, target)
            .await
    }

    /// Like [`Self::add_link`], listening on `bind` (port 0: an ephemeral port).
    pub async fn add_link_at(
        &self,
        bind: SocketAddr,
        from: &str,
        to: &str,
        target: SocketAddr,
    ) -> Result<SocketAddr, NetError> {
        self.listen(bind, LinkSource::Fixed(from.into()), to, target)
            .await
    }

    /// A proxy on `bind` for every link into `to`: each accepted connection's source node is
    /// what `resolve` says of its peer address (`None`: unknown, and no fault applies to it).
    pub async fn add_inbound_at(
        &self,
        bind: SocketAddr,
        to: &str,
        target: SocketAddr,
        resolve: Resolver,
    ) -> Result<SocketAddr, NetError> {
        self.listen(bind, LinkSource::Resolve(resolve), to, target)
            .await
    }

    async fn listen(
        &self,
        bind: SocketAddr,
        source: LinkSource,
        to: &str,
        target: SocketAddr,
    ) -> Result<SocketAddr, NetError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| NetError::Proxy {
                context: format!("bind a proxy for ->{to} on {bind}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NetError::Proxy {
            context: "proxy address".into(),
            source,
        })?;
        let link = Link {
            source,
            to: to.into(),
            target,
            faults: self.faults.subscribe(),
            cancel: self.cancel.clone(),
            tracker: self.tracker.clone(),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_LINK)),
        };
        self.tracker.spawn(link.accept_loop(listener));
        Ok(addr)
    }

    fn change(&self, f: impl FnOnce(&mut ProxyFaults)) {
        self.faults.send_modify(f);
    }

    /// Closes every connection between nodes of `a` and nodes of `b` and refuses new ones,
    /// until [`Network::heal`].
    pub fn sever(&self, a: &[String], b: &[String]) {
        self.change(|pf| {
            for x in a {
                for y in b.iter().filter(|y| *y != x) {
                    let pair = if x <= y {
                        (x.clone(), y.clone())
                    } else {
                        (y.clone(), x.clone())
                    };
                    pf.severed.insert(pair);
                }
            }
        });
    }

    /// The network faults in place (without severed pairs).
    pub fn faults(&self) -> Faults {
        self.faults.borrow().faults.clone()
    }

    /// Stops every proxy and connection and waits for their tasks.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Network for ProxyNetwork {
    async fn partition(&self, a: &[String], b: &[String]) -> Result<(), NetError> {
        self.change(|pf| pf.faults.partition(a, b));
        Ok(())
    }

    async fn one_way(&self, from: &[String], to: &[String]) -> Result<(), NetError> {
        self.change(|pf| pf.faults.one_way(from, to));
        Ok(())
    }

    async fn lossy(&self, a: &[String], b: &[String], percent: u8) -> Result<(), NetError> {
        self.change(|pf| pf.faults.lossy(a, b, percent));
        Ok(())
    }

    async fn heal(&self) -> Result<(), NetError> {
        self.change(|pf| *pf = ProxyFaults::default());
        Ok(())
    }
}

/// Says which node opened a connection, from its peer address.
pub type Resolver = Arc<dyn Fn(SocketAddr) -> Option<String> + Send + Sync>;

/// Who connects through a link.
enum LinkSource {
    Fixed(String),
    Resolve(Resolver),
}

/// The source name of connections whose owner could not be found: no fault names it.
pub const UNKNOWN_SOURCE: &str = "?unknown";

struct Link {
    source: LinkSource,
    to: String,
    target: SocketAddr,
    faults: watch::Receiver<ProxyFaults>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Link {
    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((client, peer)) = accepted else {
                // Transient accept errors (e.g. out of descriptors): keep serving.
                continue;
            };
            let from = match &self.source {
                LinkSource::Fixed(name) => name.clone(),
                LinkSource::Resolve(resolve) => {
                    resolve(peer).unwrap_or_else(|| UNKNOWN_SOURCE.to_string())
                }
            };
            if self.faults.borrow().is_severed(&from, &self.to) {
                drop(client);
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                drop(client);
                continue;
            };
            let conn = Conn {
                from,
                to: self.to.clone(),
                target: self.target,
                faults: self.faults.clone(),
                cancel: self.cancel.clone(),
            };
            self.tracker.spawn(async move {
                conn.serve(client).await;
                drop(permit);
            });
        }
    }
}

struct Conn {
    from: String,
    to: String,
    target: SocketAddr,
    faults: watch::Receiver<ProxyFaults>,
    cancel: CancellationToken,
}

/// Why a pump stopped.
enum Stop {
    Done,
    Severed,
}

impl Conn {
    async fn serve(self, client: TcpStream) {
        let connect = TcpStream::connect(self.target);
        let server = tokio::select! {
            _ = self.cancel.cancelled() => return,
            r = tokio::time::timeout(Duration::from_millis(TARGET_CONNECT_TIMEOUT_MS), connect) => r,
        };
        let Ok(Ok(server)) = server else {
            return; // target down: close the client side, as a refused connection would
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = pump(
            client_read,
            server_write,
            (self.from.clone(), self.to.clone()),
            self.faults.clone(),
            self.cancel.clone(),
        );
        let down = pump(
            server_read,
            client_write,
            (self.to.clone(), self.from.clone()),
            self.faults.clone(),
            self.cancel.clone(),
        );
        // When either direction is severed, close both at once.
        tokio::pin!(up, down);
        let mut up_done = false;
        let mut down_done = false;
        while !(up_done && down_done) {
            let stop = tokio::select! {
                s = &mut up, if !up_done => { up_done = true; s }
                s = &mut down, if !down_done => { down_done = true; s }
            };
            if matches!(stop, Stop::Severed) {
                return;
            }
        }
    }
}

/// What a direction may do now.
enum Gate {
    Pass { loss_percent: u8 },
    Hold,
    Sever,
}

fn gate(pf: &ProxyFaults, (src, dst): &(String, String)) -> Gate {
    if pf.is_severed(src, dst) {
        Gate::Sever
    } else if pf.faults.dropped(src, dst) {
        Gate::Hold
    } else {
        Gate::Pass {
            loss_percent: pf.faults.loss_percent(src, dst),
        }
    }
}

/// Waits until the direction may pass; `None` when severed or cancelled.
async fn wait_open(
    faults: &mut watch::Receiver<ProxyFaults>,
    dir: &(String, String),
    cancel: &CancellationToken,
) -> Option<u8> {
    loop {
        let g = gate(&faults.borrow_and_update(), dir);
        match g {
            Gate::Pass { loss_percent } => return Some(loss_percent),
            Gate::Sever => return None,
            Gate::Hold => {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    changed = faults.changed() => {
                        if changed.is_err() {
                            return None; // the network was dropped
                        }
                    }
                }
            }
        }
    }
}

async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    dir: (String, String),
    mut faults: watch::Receiver<ProxyFaults>,
    cancel: CancellationToken,
) -> Stop {
    let mut buf = vec![0u8; PROXY_CHUNK_BYTES];
    loop {
        if wait_open(&mut faults, &dir, &cancel).await.is_none() {
            return Stop::Severed;
        }
        // Read, but notice a fault change meanwhile (read is cancel-safe: nothing is lost).
        let n = tokio::select! {
            _ = cancel.cancelled() => return Stop::Severed,
            changed = faults.changed() => {
                if changed.is_err() {
                    return Stop::Severed;
                }
                continue;
            }
            r = reader.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = writer.shutdown().await;
                    return Stop::Done;
                }
                Ok(n) => n,
            },
        };
        // Bytes in hand: hold them while the direction is cut, deliver after heal.
        let Some(loss_percent) = wait_open(&mut faults, &dir, &cancel).await else {
            return Stop::Severed;
        };
        if loss_percent > 0 && rand::random_range(0..100u8) < loss_percent {
            tokio::select! {
                _ = cancel.cancelled() => return Stop::Severed,
                _ = tokio::time::sleep(Duration::from_millis(LOSSY_DELAY_MS)) => {}
            }
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            return Stop::Done;
        }
    }
}

/// Most `/proc/<pid>/fd` entries looked at per process by [`socket_owner`].
pub const MAX_FDS_SCANNED: usize = 65_536;

/// Which of `processes` (name, pid) holds the TCP socket whose local address is `peer` (the
/// peer address a proxy sees on accept), from `/proc/net/tcp` and `/proc/<pid>/fd`. `None`
/// when no listed process holds it (or `/proc` cannot be read). IPv4 only.
pub fn socket_owner(peer: SocketAddr, processes: &[(String, u32)]) -> Option<String> {
    let inode = socket_inode(peer, &std::fs::read_to_string("/proc/net/tcp").ok()?)?;
    let wanted = format!("socket:[{inode}]");
    processes.iter().find_map(|(name, pid)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.take(MAX_FDS_SCANNED)
            .filter_map(Result::ok)
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.as_os_str() == wanted.as_str())
            })
            .then(|| name.clone())
    })
}

/// The inode of the socket bound locally to `local` in a `/proc/net/tcp` table. Rows with inode
/// 0 are skipped: they are connections no process holds any more (TIME_WAIT), and an earlier
/// connection from the same port may still be listed that way beside the live one.
fn socket_inode(local: SocketAddr, table: &str) -> Option<u64> {
    let SocketAddr::V4(local) = local else {
        return None;
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (ip_hex, port_hex) = fields.get(1)?.split_once(':')?;
        // The kernel prints the address as the u32 it stores (network order, read natively).
        let ip = u32::from_str_radix(ip_hex, 16).ok()?;
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(ip.to_le_bytes());
        (ip == *local.ip() && port == local.port())
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
            .filter(|&inode: &u64| inode != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::sync::mpsc;

    /// How long a test waits for something that must happen.
    const MUST_MS: u64 = 5_000;
    /// How long a test waits to be sure something does not happen.
    const MUST_NOT_MS: u64 = 300;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// An echo server that also reports every chunk it received.
    async fn echo_server(tracker: &TaskTracker) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let conns = tracker.clone();
        tracker.spawn(async move {
            // Bounded: tests open only a few connections.
            for _ in 0..16 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                conns.spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                            return;
                        }
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn read_some(stream: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(ms), stream.read(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            Ok(Err(_)) => Some(vec![]),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn forwards_stalls_and_delivers_after_heal() {
        let servers = TaskTracker::new();
        let (target, mut received) = echo_server(&servers).await;
        let net = ProxyNetwork::new();
        let addr = net.add_link("a", "b", target).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"hello").await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"hello");
        assert_eq!(received.recv().await.unwrap(), b"hello");

        // Partition: nothing gets through, in either direction.
        net.partition(&s(&["a"]), &s(&["b"])).await.unwrap();
        conn.write_all(b"held").await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_NOT_MS).await, None);
        assert!(received.try_recv().is_err());
        // Heal: the held bytes arrive, then the echo.
        net.heal().await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"held");

        net.shutdown().await;
        // Shut down: the listener is gone.
        assert!(TcpStream::connect(addr).await.is_err());
        servers.close();
    }

    #[tokio::test]
    async fn one_way_cuts_only_one_direction() {
        let servers = TaskTracker::new();
        let (target, mut received) = echo_server(&servers).await;
        let net = ProxyNetwork::new();
        let addr = net.add_link("a", "b", target).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();

        // b -> a cut: the server receives, the echo does not come back.
        net.one_way(&s(&["b"]), &s(&["a"])).await.unwrap();
        conn.write_all(b"up").await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(MUST_MS), received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"up");
        assert_eq!(read_some(&mut conn, MUST_NOT_MS).await, None);
        net.heal().await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"up");

        // a -> b cut: the server receives nothing.
        net.one_way(&s(&["a"]), &s(&["b"])).await.unwrap();
        conn.write_all(b"x").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(MUST_NOT_MS), received.recv())
                .await
                .is_err()
        );
        net.heal().await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"x");
        net.shutdown().await;
        servers.close();
    }

    #[tokio::test]
    async fn sever_closes_connections_until_heal() {
        let servers = TaskTracker::new();
        let (target, _received) = echo_server(&servers).await;
        let net = ProxyNetwork::new();
        let addr = net.add_link("a", "b", target).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        net.sever(&s(&["a"]), &s(&["b"]));
        // Closed: EOF or reset, promptly.
        assert_eq!(read_some(&mut conn, MUST_MS).await, Some(vec![]));
        // New connections are accepted by the OS, then closed by the proxy.
        let mut again = TcpStream::connect(addr).await.unwrap();
        let _ = again.write_all(b"x").await;
        assert_eq!(read_some(&mut again, MUST_MS).await, Some(vec![]));
        net.heal().await.unwrap();
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh.write_all(b"back").await.unwrap();
        assert_eq!(read_some(&mut fresh, MUST_MS).await.unwrap(), b"back");
        net.shutdown().await;
        servers.close();
    }

    #[test]
    fn inodes_come_from_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:C35A 0200007F:2A9F 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n";
        let local: SocketAddr = "127.0.0.1:50010".parse().unwrap();
        assert_eq!(socket_inode(local, table), Some(4242));
        let other: SocketAddr = "127.0.0.1:50011".parse().unwrap();
        assert_eq!(socket_inode(other, table), None);
        // A TIME_WAIT row of an earlier connection from the same port comes first: skipped.
        let with_time_wait = format!(
            "{}   1: 0100007F:C35A 0200007F:2A9F 06 00000000:00000000 03:00000F3A 00000000     0        0 0 3 0\n{}",
            table.lines().next().unwrap().to_owned() + "\n",
            table.lines().nth(1).unwrap()
        );
        assert_eq!(socket_inode(local, &with_time_wait), Some(4242));
    }

    #[tokio::test]
    async fn inbound_links_resolve_their_source_per_connection() {
        let servers = TaskTracker::new();
        let (target, _received) = echo_server(&servers).await;
        let net = ProxyNetwork::new();
        let me = std::process::id();
        // This test process opens the connection, so it is found as "a".
        let resolve: Resolver = Arc::new(move |peer| socket_owner(peer, &[("a".into(), me)]));
        let addr = net
            .add_inbound_at("127.0.0.1:0".parse().unwrap(), "b", target, resolve)
            .await
            .unwrap();
        net.partition(&s(&["a"]), &s(&["b"])).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"cut").await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_NOT_MS).await, None);
        net.heal().await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"cut");
        // A partition naming someone else leaves this connection alone.
        net.partition(&s(&["c"]), &s(&["b"])).await.unwrap();
        conn.write_all(b"ok").await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"ok");
        net.shutdown().await;
        servers.close();
    }

    #[tokio::test]
    async fn lossy_links_delay_chunks() {
        let servers = TaskTracker::new();
        let (target, _received) = echo_server(&servers).await;
        let net = ProxyNetwork::new();
        let addr = net.add_link("a", "b", target).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        net.lossy(&s(&["a"]), &s(&["b"]), 100).await.unwrap();
        let start = Instant::now();
        conn.write_all(b"slow").await.unwrap();
        assert_eq!(read_some(&mut conn, MUST_MS).await.unwrap(), b"slow");
        // Both directions lost once: at least two delays.
        assert!(start.elapsed() >= Duration::from_millis(2 * LOSSY_DELAY_MS));
        net.shutdown().await;
        servers.close();
    }
}
