//! `[os]`: what the hosts themselves need beyond k3s: kernel settings (`sysctl`), a running
//! time sync client, security updates without automatic reboots, and swap stated explicitly.
//! An inventory without `[os]` changes nothing on the hosts; only the clock check, which
//! guards every join, applies always (with [`DEFAULT_MAX_CLOCK_OFFSET_SECS`]).

use std::collections::BTreeMap;

use super::error::{ErrorKind, Report};
use super::raw::{self, S};

/// How far a host's clock may be from the operator's before a run refuses to join it: etcd
/// warns of skew at one second and certificates issued by a server whose clock runs ahead
/// are not yet valid on the others, so half a minute is already far.
pub const DEFAULT_MAX_CLOCK_OFFSET_SECS: u32 = 30;

/// The settings `init` writes for the seed's platform: Loki, Promtail and Prometheus watch
/// many files (the kernel's 128 inotify instances are used up: loki#1153, hetzner-k3s#594),
/// and Elasticsearch-like stores need more memory maps than the default 65530.
pub const RECOMMENDED_SYSCTL: &[(&str, &str)] = &[
    ("fs.inotify.max_user_instances", "8192"),
    ("fs.inotify.max_user_watches", "524288"),
    ("vm.max_map_count", "262144"),
];

/// Security updates: `keep` leaves the host's apt as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Updates {
    #[default]
    Keep,
    /// unattended-upgrades installs security updates only, never reboots.
    Security,
}

/// Swap: k3s writes `failSwapOn: false` into the kubelet's configuration (k3s
/// pkg/daemons/agent/agent.go:180) and no `memorySwap` behaviour, so the kubelet starts with
/// swap on and pods do not use it (`NoSwap`); `off` turns it off now and at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Swap {
    #[default]
    Keep,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os {
    /// Kernel settings, key (dotted) → value, written to the tool's sysctl.d file.
    pub sysctl: BTreeMap<String, String>,
    /// A time sync client (the host's own, else chrony) enabled and running.
    pub time_sync: bool,
    pub max_clock_offset_secs: u32,
    pub updates: Updates,
    pub swap: Swap,
}

impl Default for Os {
    fn default() -> Self {
        Os {
            sysctl: BTreeMap::new(),
            time_sync: false,
            max_clock_offset_secs: DEFAULT_MAX_CLOCK_OFFSET_SECS,
            updates: Updates::Keep,
            swap: Swap::Keep,
        }
    }
}

/// A sysctl key as `sysctl` and /proc/sys name it: dot-separated words of letters, digits,
/// `_` and `-` (no `/` form, no globs, no `..`).
fn sysctl_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.split('.').count() >= 2
        && k.split('.').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A value as written to a sysctl.d file: one line, printable, at most a few words.
fn sysctl_value(r: &mut Report, key: &str, v: &S<toml::Value>) -> Option<String> {
    let s = match v.get_ref() {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::String(s) => s.trim().to_string(),
        other => {
            r.error(
                v.span(),
                ErrorKind::WrongType,
                format!(
                    "os.sysctl \"{key}\" is a {}; expected a number or a string",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c == '#') {
        r.error(
            v.span(),
            ErrorKind::InvalidValue,
            format!("os.sysctl \"{key}\" = {s:?}: expected one line of at most 256 characters, without `#`"),
        );
        return None;
    }
    Some(s)
}

/// Keys the kubelet (k3s runs it without `protect-kernel-defaults`) and kube-proxy set each
/// time k3s starts (kubernetes pkg/kubelet/cm/container_manager_linux.go setupKernelTunables,
/// pkg/proxy/conntrack): a different value here flips back at every restart of k3s.
const KUBE_OWNED: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
];

pub(crate) fn os(o: raw::RawOs, r: &mut Report) -> Os {
    let mut sysctl = BTreeMap::new();
    for (k, v) in &o.sysctl {
        let key = k.get_ref();
        if KUBE_OWNED.contains(&key.as_str()) {
            r.warn(
                k.span(),
                format!("os.sysctl \"{key}\" is set by the kubelet or kube-proxy each time k3s starts: a different value here flips back at every restart and is set again by every `up`; set it through their flags instead (kubelet-arg, kube-proxy-arg)"),
            );
        }
        if !sysctl_key_ok(key) {
            r.error(
                k.span(),
                ErrorKind::InvalidValue,
                format!("os.sysctl key \"{key}\" is not a sysctl name; expected dotted words such as \"vm.max_map_count\""),
            );
            continue;
        }
        if let Some(v) = sysctl_value(r, key, v) {
            sysctl.insert(key.clone(), v);
        }
    }
    let max_clock_offset_secs = match &o.max_clock_offset {
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=3600).contains(&n) => n,
            _ => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidNumber,
                    format!(
                        "os.max_clock_offset is {}; expected seconds from 1 to 3600",
                        v.get_ref()
                    ),
                );
                DEFAULT_MAX_CLOCK_OFFSET_SECS
            }
        },
        None => DEFAULT_MAX_CLOCK_OFFSET_SECS,
    };
    let updates = match o.updates.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("keep", _)) => Updates::Keep,
        Some(("security", _)) => Updates::Security,
        Some((other, span)) => {
            r.error(
                span,
                ErrorKind::InvalidValue,
                format!("os.updates is \"{other}\"; expected \"security\" (unattended-upgrades, security updates only, no automatic reboot) or \"keep\""),
            );
            Updates::Keep
        }
    };
    let swap = match o.swap.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("keep", _)) => Swap::Keep,
        Some(("off", _)) => Swap::Off,
        Some((other, span)) => {
            r.error(
                span,
                ErrorKind::InvalidValue,
                format!("os.swap is \"{other}\"; expected \"keep\" (k3s runs with swap on: fail-swap-on=false) or \"off\""),
            );
            Swap::Keep
        }
    };
    Os {
        sysctl,
        time_sync: o.time_sync.unwrap_or(false),
        max_clock_offset_secs,
        updates,
        swap,
    }
}

#[cfg(test)]
mod tests {
    use super::sysctl_key_ok;

    #[test]
    fn sysctl_keys() {
        for k in [
            "vm.max_map_count",
            "net.ipv4.conf.all.rp_filter",
            "fs.inotify.max_user_watches",
            "net.ipv4.conf.eth-0.forwarding",
        ] {
            assert!(sysctl_key_ok(k), "{k}");
        }
        for k in [
            "",
            "vm",
            "vm..x",
            "vm/max_map_count",
            "net.*.x",
            "../etc",
            "a.b c",
        ] {
            assert!(!sysctl_key_ok(k), "{k}");
        }
    }
}
