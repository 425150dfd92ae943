//! Client ids (`ip@pid#n`, RocketMQ's `clientIP@instanceName` shape), which brokers list in a
//! consumer group and which the average allocation sorts.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::init_unique_id_host;

static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(1);

/// The local address this host uses to reach `addr` (no packet is sent: a UDP socket is only
/// connected); 127.0.0.1 when that cannot be found.
pub fn local_ip_towards(addr: &str) -> IpAddr {
    let found = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect(addr)?;
            socket.local_addr()
        })
        .map(|local| local.ip());
    match found {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// A fresh client id for a client that talks to `namesrv_addr`: distinct for every client
/// created in this process, and across processes by the pid.
pub fn new_client_id(namesrv_addr: &str) -> String {
    let ip = local_ip_towards(namesrv_addr);
    init_unique_id_host(ip);
    let instance = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{ip}@{}#{instance}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_distinct_and_shaped_like_rocketmq() {
        let a = new_client_id("127.0.0.1:9876");
        let b = new_client_id("127.0.0.1:9876");
        assert_ne!(a, b);
        assert!(a.starts_with("127.0.0.1@"), "{a}");
        assert!(a.contains('#'));
        // An unresolvable address still gives an id.
        assert!(new_client_id("an address without a port").contains('@'));
    }
}
