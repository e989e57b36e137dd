//! Network namespaces for multi-node tests: each node gets its own namespace and address,
//! joined to the test's namespace by a veth pair on a bridge, so the test reaches every node
//! and can cut what passes between nodes (blackhole routes on both sides). Needs root (CI runs as root); everything is made
//! and removed by the test itself, under names that carry the test process's id.

use std::process::Command;

/// Runs `ip`/`tc` with `args`; a failure fails the test with the command's output.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` namespaces with an address each on a private /24; removed on drop.
pub struct NetNamespaces {
    /// Each node's namespace and address.
    pub nodes: Vec<(String, String)>,
    bridge: String,
}

impl NetNamespaces {
    pub fn new(n: usize) -> NetNamespaces {
        let pid = std::process::id();
        let tag = format!("chr{}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + (pid / 250) % 100, pid % 250);
        let bridge = format!("{tag}br");
        let net = NetNamespaces { nodes: Vec::new(), bridge: bridge.clone() };
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        let mut net = net;
        for i in 1..=n {
            let (ns, outer, inner, addr) =
                (format!("{tag}n{i}"), format!("{tag}v{i}"), format!("{tag}i{i}"), format!("{subnet}.{i}"));
            run("ip", &["netns", "add", &ns]);
            net.nodes.push((ns.clone(), addr.clone()));
            run("ip", &["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            run("ip", &["link", "set", &inner, "netns", &ns]);
            run("ip", &["link", "set", &outer, "master", &bridge]);
            run("ip", &["link", "set", &outer, "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner]);
            run("ip", &["-n", &ns, "link", "set", &inner, "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The nodes' addresses, in order.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes.iter().map(|(_, a)| a.clone()).collect()
    }

    /// Node `i` (0-based) and the other nodes no longer reach each other, both ways (the test
    /// still reaches every node).
    pub fn cut_off(&self, i: usize) {
        for (ns, addr) in self.nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n) {
            run("ip", &["-n", &self.nodes[i].0, "route", "add", "blackhole", &format!("{addr}/32")]);
            run("ip", &["-n", ns, "route", "add", "blackhole", &format!("{}/32", self.nodes[i].1)]);
        }
    }

    /// Undoes [`Self::cut_off`] of node `i`.
    pub fn heal(&self, i: usize) {
        for (ns, addr) in self.nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n) {
            run("ip", &["-n", &self.nodes[i].0, "route", "del", "blackhole", &format!("{addr}/32")]);
            run("ip", &["-n", ns, "route", "del", "blackhole", &format!("{}/32", self.nodes[i].1)]);
        }
    }
}

impl Drop for NetNamespaces {
    fn drop(&mut self) {
        for (ns, _) in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
