//! Network plumbing: one bridge namespace per lab, one namespace per node, a veth from the host.
//!
//! ```text
//! host ns: bsl<i> 10.213.i.1/24 ──veth── [bsl-<lab>: host ─ br0 ─ master-1, worker-1, ...]
//!                                               each peer ──veth── [bsl-<lab>-<node>: eth0]
//! ```

use super::util::sh;
use anyhow::Result;
use std::net::Ipv4Addr;
use std::path::Path;

pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

pub fn link_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

fn add_netns(ns: &str) -> Result<()> {
    if !netns_exists(ns) {
        sh("ip", &["netns", "add", ns])?;
    }
    sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates the lab's bridge namespace and the host's veth into it.
pub fn setup_bridge(bridge_ns: &str, host_if: &str, host_addr: Ipv4Addr) -> Result<()> {
    add_netns(bridge_ns)?;
    sh(
        "ip",
        &["-n", bridge_ns, "link", "add", "br0", "type", "bridge"],
    )?;
    sh("ip", &["-n", bridge_ns, "link", "set", "br0", "up"])?;
    // Created directly with its peer inside the bridge namespace: no name clash between labs.
    sh(
        "ip",
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "host", "netns", bridge_ns,
        ],
    )?;
    sh(
        "ip",
        &[
            "-n", bridge_ns, "link", "set", "host", "master", "br0", "up",
        ],
    )?;
    sh(
        "ip",
        &["addr", "add", &format!("{host_addr}/24"), "dev", host_if],
    )?;
    sh("ip", &["link", "set", host_if, "up"])?;
    Ok(())
}

/// Creates a node's namespace with `eth0` configured, its peer attached to the bridge.
pub fn setup_node(
    bridge_ns: &str,
    node_ns: &str,
    peer_if: &str,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<()> {
    add_netns(node_ns)?;
    sh(
        "ip",
        &[
            "-n", bridge_ns, "link", "add", peer_if, "type", "veth", "peer", "name", "eth0",
            "netns", node_ns,
        ],
    )?;
    sh(
        "ip",
        &[
            "-n", bridge_ns, "link", "set", peer_if, "master", "br0", "up",
        ],
    )?;
    sh(
        "ip",
        &[
            "-n",
            node_ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ],
    )?;
    sh("ip", &["-n", node_ns, "link", "set", "eth0", "up"])?;
    sh(
        "ip",
        &[
            "-n",
            node_ns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ],
    )?;
    Ok(())
}

/// Cut (`up == false`) or heal a node's link, from the bridge side so the node cannot undo it.
pub fn set_peer_link(bridge_ns: &str, peer_if: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    sh("ip", &["-n", bridge_ns, "link", "set", peer_if, state])?;
    Ok(())
}

/// Make a node's address silent (`true`) or answer again: every IP packet that reaches the
/// node's namespace is dropped (netfilter INPUT), and every one it would send (OUTPUT, so the
/// FIN or RST of its dying processes never leaves), so a connection to a powered-off node
/// times out the way it does to a real one, instead of being closed or refused by its
/// namespace's kernel. ARP still answers, so nothing reports the host unreachable either.
pub fn set_silent(node_ns: &str, silent: bool) -> Result<()> {
    set_drop(node_ns, "INPUT", "lab-silent", &[], silent)?;
    set_drop(node_ns, "OUTPUT", "lab-silent", &[], silent)
}

/// Drop (`true`) or pass again what the node sends to TCP port `port` anywhere: a node that
/// cannot reach the supervisor port (6443) cannot join, and k3s on it retries.
pub fn set_port_blocked(node_ns: &str, port: u16, blocked: bool) -> Result<()> {
    let port = port.to_string();
    set_drop(
        node_ns,
        "OUTPUT",
        "lab-block-port",
        &["-p", "tcp", "--dport", &port],
        blocked,
    )
}

/// One DROP rule of `chain` in the node's namespace, found again by its comment `tag`.
fn set_drop(node_ns: &str, chain: &str, tag: &str, matcher: &[&str], on: bool) -> Result<()> {
    let rule = |op: &str| -> Vec<String> {
        let mut a = vec!["netns", "exec", node_ns, "iptables", op, chain];
        a.extend_from_slice(matcher);
        a.extend_from_slice(&["-m", "comment", "--comment", tag, "-j", "DROP"]);
        a.iter().map(|s| s.to_string()).collect()
    };
    let run = |op: &str| {
        let v = rule(op);
        sh("ip", &v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Idempotent: every copy of the rule goes first.
    while run("-D").is_ok() {}
    if on {
        run("-I")?;
    }
    Ok(())
}

/// Slow a node's link to `kbit` (`None`: its speed back), on both veth ends, so uploads to the
/// node and its answers are slow alike. A token bucket with a short queue: TCP sees a slow
/// link, not a buffer that holds seconds of data.
pub fn set_throttle(
    bridge_ns: &str,
    peer_if: &str,
    node_ns: &str,
    kbit: Option<u32>,
) -> Result<()> {
    for (ns, dev) in [(bridge_ns, peer_if), (node_ns, "eth0")] {
        let _ = sh("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"]);
        if let Some(k) = kbit {
            let rate = format!("{k}kbit");
            sh(
                "tc",
                &[
                    "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                    "32kb", "latency", "200ms",
                ],
            )?;
        }
    }
    Ok(())
}

pub fn peer_link_up(bridge_ns: &str, peer_if: &str) -> bool {
    sh("ip", &["-n", bridge_ns, "-o", "link", "show", peer_if])
        .map(|s| s.contains(",UP"))
        .unwrap_or(false)
}

pub fn delete_netns(ns: &str) -> Result<()> {
    if netns_exists(ns) {
        sh("ip", &["netns", "delete", ns])?;
    }
    Ok(())
}

pub fn delete_link(ifname: &str) -> Result<()> {
    if link_exists(ifname) {
        sh("ip", &["link", "delete", ifname])?;
    }
    Ok(())
}

/// Namespaces that belong to lab `name` (its bridge and its nodes), for teardown without state.
pub fn lab_netns(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return out;
    };
    let prefix = format!("bsl-{name}");
    for e in rd.flatten() {
        let ns = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = ns.strip_prefix(&prefix) else {
            continue;
        };
        // `bsl-a-master-1` belongs to lab `a`, `bsl-a-b-master-1` to lab `a-b`.
        let is_node = rest.strip_prefix('-').is_some_and(|node| {
            ["master-", "worker-", "spare-"].iter().any(|p| {
                node.strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        });
        if rest.is_empty() || is_node {
            out.push(ns);
        }
    }
    out
}

/// Makes the bridge namespace a router for the lab's NAT'd range: each public address is
/// DNATed to its node's interface address, and the source is rewritten to the router so
/// replies come back through it (as a cloud's 1:1 NAT for a floating IP would).
pub fn setup_nat(
    bridge_ns: &str,
    host_if: &str,
    router: Ipv4Addr,
    public_net: &str,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<()> {
    sh(
        "ip",
        &[
            "-n",
            bridge_ns,
            "addr",
            "add",
            &format!("{router}/24"),
            "dev",
            "br0",
        ],
    )?;
    sh(
        "ip",
        &[
            "netns",
            "exec",
            bridge_ns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ],
    )?;
    for (public, private) in pairs {
        let (p, q) = (public.to_string(), private.to_string());
        sh(
            "ip",
            &[
                "netns",
                "exec",
                bridge_ns,
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &p,
                "-j",
                "DNAT",
                "--to-destination",
                &q,
            ],
        )?;
        sh(
            "ip",
            &[
                "netns",
                "exec",
                bridge_ns,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-d",
                &q,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "SNAT",
                "--to-source",
                &router.to_string(),
            ],
        )?;
    }
    sh(
        "ip",
        &[
            "route",
            "replace",
            public_net,
            "via",
            &router.to_string(),
            "dev",
            host_if,
        ],
    )?;
    Ok(())
}

/// Routes a node's traffic for the NAT'd range through the lab's router.
pub fn route_public(node_ns: &str, router: Ipv4Addr, public_net: &str) -> Result<()> {
    sh(
        "ip",
        &[
            "-n",
            node_ns,
            "route",
            "replace",
            public_net,
            "via",
            &router.to_string(),
        ],
    )?;
    Ok(())
}
