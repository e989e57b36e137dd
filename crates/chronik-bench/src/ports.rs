//! Ports for the servers a benchmark starts. A port the kernel picks for a listener (port 0)
//! comes from the same range as the source ports of outgoing connections, so between the
//! pick and the server's bind another connection (the nodes' own, to each other) may take it
//! and the server fails to start. Ports are picked below that range instead.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where outgoing connections' source ports start, unless the kernel says otherwise.
const DEFAULT_EPHEMERAL_START: u32 = 32768;
const LOWEST: u32 = 10000;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// A port free on 127.0.0.1 now and outside the range of outgoing connections' ports (falls
/// back to one the kernel picks if that range leaves no room).
pub fn free_port() -> u16 {
    let top = ephemeral_start();
    if top > LOWEST + 100 {
        let span = top - LOWEST;
        // Spread by process, so two benchmarks at once do not walk the same ports.
        let _ = NEXT.compare_exchange(
            0,
            std::process::id().wrapping_mul(7919) % span + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..span {
            let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
