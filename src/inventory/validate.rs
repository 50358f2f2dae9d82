//! Raw inventory → validated [`Inventory`], collecting every problem with its location.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{ErrorKind, Report};
use super::flags::{self, Lookup};
use super::raw::{self, SpannedMap, S};
use super::syntax;
use super::values::{
    chart_archive_value, count_up_to, path_value, placement, shipped_path, undefined_variables,
    Shipped,
};
use super::*;

const K3S_COMPONENTS: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
    "ccm",
];

/// AddOn names (manifest file names) that k3s or the add-ons already use.
const RESERVED_MANIFEST_NAMES: &[&str] = &[
    "coredns",
    "traefik",
    "traefik-config",
    "local-storage",
    "metrics-server",
    "rolebindings",
    "runtimes",
    "ccm",
    "longhorn",
    "cert-manager",
    "cert-manager-issuers",
    "sealed-secrets",
    "ingress-routes",
];

pub(crate) fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
    let mut report = Report::new(path.to_path_buf(), text);
    let raw: raw::RawInventory = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            de_error(&mut report, &e);
            return Err(InventoryError::Invalid {
                diagnostics: report.take_errors(),
            });
        }
    };
    let base_dir = base_dir_of(path);
    let inventory = build(raw, &mut report, path, &base_dir);
    let errors = report.take_errors();
    if errors.is_empty() {
        let mut inventory = inventory;
        inventory.warnings = std::mem::take(&mut report.warnings);
        Ok(inventory)
    } else {
        Err(InventoryError::Invalid {
            diagnostics: errors,
        })
    }
}

fn base_dir_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&parent).unwrap_or(parent)
}

/// Turns a toml/serde error into one diagnostic, classifying it and adding a "did you mean".
fn de_error(report: &mut Report, e: &toml::de::Error) {
    let span = e.span().unwrap_or(0..0);
    let msg = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let (kind, message) = if let Some(rest) = msg.strip_prefix("unknown field ") {
        let words: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let hint = match words.split_first() {
            Some((unknown, known)) => match syntax::closest(unknown, known.iter().copied()) {
                Some(best) => format!("; did you mean `{best}`?"),
                None => String::new(),
            },
            None => String::new(),
        };
        (ErrorKind::UnknownKey, format!("{msg}{hint}"))
    } else if msg.starts_with("missing field") {
        (
            ErrorKind::MissingKey,
            format!("{msg} in this table; add it"),
        )
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        let friendly = msg
            .replace("a borrowed string", "a string")
            .replace("expected a sequence", "expected a list")
            .replace("map,", "table,")
            .replace("expected a map", "expected a table")
            .replace("expected i64", "expected an integer")
            .replace("sequence,", "list,");
        (ErrorKind::WrongType, friendly)
    } else {
        (ErrorKind::Syntax, format!("TOML syntax: {msg}"))
    };
    report.error(span, kind, message);
}

fn quoted_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Reads an enumerated string value.
fn choice<T: Copy>(r: &mut Report, v: &S<String>, what: &str, options: &[(&str, T)]) -> Option<T> {
    let s = v.get_ref().as_str();
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
        return Some(*t);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let hint = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(s))
        .copied()
        .or_else(|| syntax::closest(s, names.iter().copied()))
        .map(|n| format!(" (did you mean \"{n}\"?)"))
        .unwrap_or_default();
    r.error(
        v.span(),
        ErrorKind::InvalidValue,
        format!(
            "{what} \"{s}\" is not valid{hint}; expected {}",
            quoted_list(&names)
        ),
    );
    None
}

fn port(r: &mut Report, v: &S<i64>, what: &str) -> Option<u16> {
    match u16::try_from(*v.get_ref()) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            r.error(
                v.span(),
                ErrorKind::InvalidPort,
                format!(
                    "{what} {} is out of range; expected a port from 1 to 65535",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn count(r: &mut Report, v: &S<i64>, what: &str) -> Option<u32> {
    count_up_to(r, v, what, 100)
}

/// Why `host` names only the machine it is used on (or no machine): loopback, link-local or
/// unspecified addresses, `localhost`.
fn local_only(host: &str) -> Option<&'static str> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost") {
        return Some("a loopback name");
    }
    match h.parse::<std::net::IpAddr>().ok()? {
        a if a.is_loopback() => Some("a loopback address"),
        a if a.is_unspecified() => Some("the unspecified address"),
        std::net::IpAddr::V4(a) if a.is_link_local() => Some("a link-local address"),
        std::net::IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => {
            Some("a link-local address")
        }
        _ => None,
    }
}

fn host_value(r: &mut Report, v: &S<String>, what: &str) -> bool {
    match syntax::host(v.get_ref()) {
        Ok(()) => true,
        Err(e) => {
            r.error(
                v.span(),
                ErrorKind::InvalidHost,
                format!(
                    "{what} \"{}\" is not valid: {e}; expected an IP address or a DNS name",
                    v.get_ref()
                ),
            );
            false
        }
    }
}

fn dns_label_value(r: &mut Report, v: &S<String>, what: &str) -> bool {
    match syntax::dns_label(v.get_ref()) {
        Ok(()) => true,
        Err(e) => {
            r.error(
                v.span(),
                ErrorKind::InvalidName,
                format!(
                    "{what} \"{}\" is not valid: {e}; expected an RFC 1123 label (lowercase a-z, 0-9 and '-', at most 63 characters)",
                    v.get_ref()
                ),
            );
            false
        }
    }
}

fn subdomain_value(r: &mut Report, v: &S<String>, what: &str) -> bool {
    match syntax::dns_subdomain(v.get_ref(), 253) {
        Ok(()) => true,
        Err(e) => {
            r.error(
                v.span(),
                ErrorKind::InvalidName,
                format!(
                    "{what} \"{}\" is not valid: {e}; expected an RFC 1123 name (lowercase a-z, 0-9, '-' and '.')",
                    v.get_ref()
                ),
            );
            false
        }
    }
}

fn chart_version_value(
    r: &mut Report,
    v: Option<&S<String>>,
    what: &str,
    with_v: bool,
    default: &str,
) -> String {
    let Some(v) = v else {
        return default.to_string();
    };
    if let Err(e) = syntax::chart_version(v.get_ref(), with_v) {
        r.error(
            v.span(),
            ErrorKind::InvalidVersion,
            format!(
                "{what} version \"{}\" is not valid: {e} (default \"{default}\")",
                v.get_ref()
            ),
        );
    }
    v.get_ref().clone()
}

fn build(raw: raw::RawInventory, r: &mut Report, path: &Path, base: &Path) -> Inventory {
    let cluster_span = raw.cluster.name.span();
    let shipped = Shipped {
        base,
        anywhere: raw.cluster.allow_files_outside_inventory == Some(true),
    };
    if shipped.anywhere {
        r.warn(
            r.key_span("allow_files_outside_inventory"),
            "allow_files_outside_inventory = true: [[manifests]], values_file, chart_archive and endpoint_ca may name any file on this machine, and it goes to the cluster; review every such path in a change to this inventory",
        );
    }
    // Snapshot flags written as server_config keys (before `[etcd]` existed).
    let etcd_flags: Vec<(String, Range<usize>)> = raw
        .cluster
        .server_config
        .keys()
        .filter_map(|k| {
            super::etcd::key_for_flag(k.get_ref()).map(|_| (k.get_ref().clone(), k.span()))
        })
        .collect();
    let raw_s3_flags: Vec<(String, Range<usize>)> = raw
        .cluster
        .server_config
        .keys()
        .filter(|k| k.get_ref().starts_with("etcd-s3-"))
        .map(|k| (k.get_ref().clone(), k.span()))
        .collect();
    let raw_server_config_keys: Vec<(String, Range<usize>)> = raw
        .cluster
        .server_config
        .keys()
        .map(|k| (k.get_ref().clone(), k.span()))
        .collect();
    let cluster = cluster(raw.cluster, r);
    let install = install(raw.install, r, base);
    let ssh = ssh(raw.ssh, r, base);

    let nodes: Vec<Node> = raw.nodes.iter().filter_map(|n| node(n, r, base)).collect();
    cross_node_checks(&raw.nodes, &nodes, &ssh, &cluster, r, cluster_span.clone());

    let mut variables = BTreeMap::new();
    for (k, v) in &raw.variables {
        if !syntax::identifier(k.get_ref()) {
            r.error(
                k.span(),
                ErrorKind::InvalidName,
                format!(
                    "variable name \"{}\" is not valid; expected letters, digits and '_', not starting with a digit",
                    k.get_ref()
                ),
            );
        }
        variables.insert(k.get_ref().clone(), v.get_ref().clone());
    }

    let addons = match raw.addons {
        Some(a) => addons(a, r, &nodes, &shipped),
        None => Addons::default(),
    };
    let shown_base = path.parent().unwrap_or(Path::new(""));
    let manifests = manifests(&raw.manifests, r, &shipped, shown_base, &variables);
    let built = super::charts::charts(
        &raw.charts,
        r,
        &shipped,
        shown_base,
        &variables,
        Some(&cluster.k3s_version),
    );
    let enabled: Vec<&str> = [
        addons
            .longhorn
            .as_ref()
            .filter(|l| !l.uninstall)
            .map(|_| "longhorn"),
        addons.traefik.as_ref().map(|_| "traefik"),
        addons.cert_manager.as_ref().map(|_| "cert-manager"),
        addons.sealed_secrets.as_ref().map(|_| "sealed-secrets"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let manifest_after: Vec<(String, Vec<S<String>>)> = raw
        .manifests
        .iter()
        .map(|m| {
            let name = m.name.as_ref().unwrap_or(&m.path).get_ref().clone();
            (name, m.after.clone())
        })
        .collect();
    super::charts::order_checks(&built, &manifest_after, &enabled, r);
    let charts = built.charts;
    let etcd = raw.etcd.map(|e| {
        if cluster.datastore != Datastore::Etcd {
            let span = e
                .snapshot_schedule
                .as_ref()
                .map(|s| s.span())
                .unwrap_or_else(|| cluster_span.clone());
            r.error(
                span,
                ErrorKind::Conflict,
                "[etcd] needs datastore = \"etcd\": a SQLite cluster has no etcd to snapshot",
            );
        }
        super::etcd::etcd(e, r, &shipped)
    });
    for k in raw_s3_flags.iter() {
        let (flag, span) = k;
        match flag.as_str() {
            "etcd-s3-session-token" => r.error(
                span.clone(),
                ErrorKind::InvalidValue,
                format!(
                    "[cluster.server_config] key \"{flag}\": {}",
                    super::etcd::SESSION_TOKEN_WHY
                ),
            ),
            "etcd-s3-config-secret" if etcd.as_ref().is_some_and(|e| e.s3.is_some()) => r.error(
                span.clone(),
                ErrorKind::Conflict,
                format!("[cluster.server_config] key \"{flag}\" is ignored by k3s when other S3 settings are given (pkg/etcd/s3/s3.go:129-151), and [etcd.s3] gives them; keep one"),
            ),
            _ => {}
        }
    }
    for (flag, span) in etcd_flags {
        let key = super::etcd::key_for_flag(&flag).unwrap_or_default();
        if etcd.is_some() {
            r.error(
                span,
                ErrorKind::Conflict,
                format!("[cluster.server_config] key \"{flag}\" is what [etcd] renders (as {key}); set it there only"),
            );
        } else {
            r.warn(
                span,
                format!("[cluster.server_config] key \"{flag}\" still works, but belongs in [etcd] as {key}"),
            );
        }
    }

    let os = raw.os.map(|o| super::os::os(o, r));
    let registries = raw
        .registries
        .map(|g| super::registries::registries(g, r, base));
    if registries.as_ref().is_some_and(|g| g.embedded_registry) {
        if let Some(k) = raw_server_config_keys
            .iter()
            .find(|(k, _)| k == "embedded-registry")
        {
            r.error(
                k.1.clone(),
                ErrorKind::Conflict,
                "[cluster.server_config] key \"embedded-registry\" is what [registries] embedded_registry renders; set it there only",
            );
        }
    }
    Inventory {
        cluster,
        install,
        ssh,
        nodes,
        variables,
        addons,
        manifests,
        charts,
        etcd,
        os,
        registries,
        path: path.to_path_buf(),
        base_dir: base.to_path_buf(),
        warnings: Vec::new(),
    }
}

fn cluster(c: raw::RawCluster, r: &mut Report) -> Cluster {
    dns_label_value(r, &c.name, "cluster name");

    let k3s_version = match &c.k3s_version {
        None => K3sVersion {
            major: 1,
            minor: 36,
            patch: 3,
            k3s: 1,
        },
        Some(v) => match v.get_ref().parse::<K3sVersion>() {
            Ok(version) => version,
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidVersion,
                    format!(
                        "k3s_version \"{}\" is not valid: {e}; expected vMAJOR.MINOR.PATCH+k3sN such as \"{DEFAULT_K3S_VERSION}\"",
                        v.get_ref()
                    ),
                );
                K3sVersion {
                    major: 0,
                    minor: 0,
                    patch: 0,
                    k3s: 0,
                }
            }
        },
    };

    if let Some(ep) = &c.api_endpoint {
        if host_value(r, ep, "api_endpoint") {
            if let Some(why) = local_only(ep.get_ref()) {
                // Agents join through it and the kubeconfig points at it: from any other
                // machine such an address is that machine itself, or nothing.
                r.error(
                    ep.span(),
                    ErrorKind::InvalidHost,
                    format!(
                        "api_endpoint \"{}\" is {why}, so other nodes and your kubeconfig could not reach the servers through it; give a DNS name, VIP or address of a server that every node reaches, or leave api_endpoint out to use the first server's host",
                        ep.get_ref()
                    ),
                );
            }
        }
    }
    for san in &c.tls_san {
        host_value(r, san, "tls_san entry");
    }

    let flannel_backend = match &c.flannel_backend {
        None => FlannelBackend::Vxlan,
        Some(v) if matches!(v.get_ref().as_str(), "wireguard" | "ipsec") => {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!(
                    "flannel_backend \"{}\" was removed from k3s (wireguard in v1.26, ipsec in v1.27); use \"wireguard-native\"",
                    v.get_ref()
                ),
            );
            FlannelBackend::Vxlan
        }
        Some(v) => choice(
            r,
            v,
            "flannel_backend",
            &[
                ("vxlan", FlannelBackend::Vxlan),
                ("host-gw", FlannelBackend::HostGw),
                ("wireguard-native", FlannelBackend::WireguardNative),
                ("none", FlannelBackend::None),
            ],
        )
        .unwrap_or(FlannelBackend::Vxlan),
    };

    let mut disable = Vec::new();
    for d in &c.disable {
        let name = d.get_ref();
        if K3S_COMPONENTS.contains(&name.as_str()) {
            if disable.contains(name) {
                r.error(
                    d.span(),
                    ErrorKind::Duplicate,
                    format!("\"{name}\" is listed twice in disable"),
                );
            }
            disable.push(name.clone());
        } else {
            let hint = syntax::closest(name, K3S_COMPONENTS.iter().copied())
                .map(|n| format!(" (did you mean \"{n}\"?)"))
                .unwrap_or_default();
            r.error(
                d.span(),
                ErrorKind::InvalidValue,
                format!(
                    "disable: \"{name}\" is not a k3s packaged component{hint}; expected {}; extra manifests go in [[manifests]]",
                    quoted_list(K3S_COMPONENTS)
                ),
            );
        }
    }

    let cluster_cidr = cidr_list(
        r,
        c.cluster_cidr.as_ref(),
        "cluster_cidr",
        DEFAULT_CLUSTER_CIDR,
    );
    let service_cidr = cidr_list(
        r,
        c.service_cidr.as_ref(),
        "service_cidr",
        DEFAULT_SERVICE_CIDR,
    );
    if let (Some(pods), Some(svcs)) = (&cluster_cidr.1, &service_cidr.1) {
        for p in pods {
            for s in svcs {
                if syntax::cidrs_overlap(*p, *s) {
                    let span = c
                        .service_cidr
                        .as_ref()
                        .or(c.cluster_cidr.as_ref())
                        .map_or(0..0, |v| v.span());
                    r.error(
                        span,
                        ErrorKind::InvalidCidr,
                        format!(
                            "service_cidr {}/{} overlaps cluster_cidr {}/{}; pods and services need separate ranges",
                            s.0, s.1, p.0, p.1
                        ),
                    );
                }
            }
        }
    }
    if let Some(dns) = &c.cluster_dns {
        for part in dns.get_ref().split(',') {
            match part.trim().parse::<std::net::IpAddr>() {
                Err(_) => r.error(
                    dns.span(),
                    ErrorKind::InvalidCidr,
                    format!("cluster_dns \"{part}\" is not an IP address"),
                ),
                Ok(ip) => {
                    if let Some(svcs) = &service_cidr.1 {
                        let same_family: Vec<_> = svcs
                            .iter()
                            .filter(|s| s.0.is_ipv4() == ip.is_ipv4())
                            .collect();
                        if !same_family.iter().any(|s| syntax::cidr_contains(**s, ip)) {
                            r.error(
                                dns.span(),
                                ErrorKind::InvalidCidr,
                                format!(
                                    "cluster_dns {ip} is outside service_cidr {}; pick an address inside it (k3s uses .10)",
                                    service_cidr.0
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    let cluster_domain = match &c.cluster_domain {
        None => DEFAULT_CLUSTER_DOMAIN.to_string(),
        Some(v) => {
            subdomain_value(r, v, "cluster_domain");
            v.get_ref().clone()
        }
    };

    let datastore = match &c.datastore {
        None => Datastore::Etcd,
        Some(v) => choice(
            r,
            v,
            "datastore",
            &[("etcd", Datastore::Etcd), ("sqlite", Datastore::Sqlite)],
        )
        .unwrap_or(Datastore::Etcd),
    };

    let server_config = config_table(
        r,
        &c.server_config,
        Role::Server,
        "[cluster.server_config]",
        false,
    );
    let agent_config = config_table(
        r,
        &c.agent_config,
        Role::Agent,
        "[cluster.agent_config]",
        false,
    );

    Cluster {
        name: c.name.into_inner(),
        k3s_version,
        api_endpoint: c.api_endpoint.map(|v| v.into_inner()),
        tls_san: c.tls_san.into_iter().map(|v| v.into_inner()).collect(),
        flannel_backend,
        disable,
        cluster_cidr: cluster_cidr.0,
        service_cidr: service_cidr.0,
        cluster_dns: c.cluster_dns.map(|v| v.into_inner()),
        cluster_domain,
        datastore,
        server_config,
        agent_config,
    }
}

type Cidrs = Vec<(std::net::IpAddr, u8)>;

/// A comma-separated CIDR list (dual stack: at most one per IP family).
fn cidr_list(
    r: &mut Report,
    v: Option<&S<String>>,
    what: &str,
    default: &str,
) -> (String, Option<Cidrs>) {
    let Some(v) = v else {
        return (
            default.to_string(),
            syntax::cidr(default).ok().map(|c| vec![c]),
        );
    };
    let mut out = Vec::new();
    for part in v.get_ref().split(',') {
        match syntax::cidr(part.trim()) {
            Ok(c) => out.push(c),
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidCidr,
                    format!("{what}: {e}; expected ADDRESS/PREFIX such as \"{default}\", two comma-separated for dual stack"),
                );
                return (v.get_ref().clone(), None);
            }
        }
    }
    if out.len() > 2 || (out.len() == 2 && out[0].0.is_ipv4() == out[1].0.is_ipv4()) {
        r.error(
            v.span(),
            ErrorKind::InvalidCidr,
            format!("{what}: give one range, or one IPv4 and one IPv6 range for dual stack"),
        );
        return (v.get_ref().clone(), None);
    }
    (v.get_ref().clone(), Some(out))
}

/// Checks extra k3s config keys against the role's flags and the keys the tool owns.
fn config_table(
    r: &mut Report,
    map: &SpannedMap<toml::Value>,
    role: Role,
    where_: &str,
    per_server_node: bool,
) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let key = k.get_ref().as_str();
        let span = k.span();
        let trimmed = key.trim_start_matches('-');
        if trimmed != key {
            r.error(
                span.clone(),
                ErrorKind::UnknownFlag,
                format!("{where_} key \"{key}\": write config keys without leading dashes, as \"{trimmed}\""),
            );
            continue;
        }
        match flags::lookup(role, key) {
            Lookup::Alias(full) => {
                r.error(
                    span.clone(),
                    ErrorKind::UnknownFlag,
                    format!("{where_} key \"{key}\" is a short alias; write the full flag name \"{full}\""),
                );
                continue;
            }
            Lookup::Unknown => {
                if role == Role::Agent && flags::lookup(Role::Server, key) != Lookup::Unknown {
                    r.error(
                        span.clone(),
                        ErrorKind::WrongRoleFlag,
                        format!(
                            "{where_} key \"{key}\" is a server-only k3s flag; an agent with it in config.yaml exits with \"flag provided but not defined\"; set it in [cluster.server_config]"
                        ),
                    );
                } else {
                    let dashed = key.replace('_', "-");
                    let hint = if flags::lookup(role, &dashed) == Lookup::Flag {
                        format!(" (did you mean \"{dashed}\"?)")
                    } else {
                        syntax::closest(key, flags::names(role))
                            .map(|n| format!(" (did you mean \"{n}\"?)"))
                            .unwrap_or_default()
                    };
                    let role_name = match role {
                        Role::Server => "k3s server",
                        Role::Agent => "k3s agent",
                    };
                    r.error(
                        span.clone(),
                        ErrorKind::UnknownFlag,
                        format!("{where_} key \"{key}\" is not a {role_name} flag{hint}; see `k3s {} --help` for the accepted keys", match role { Role::Server => "server", Role::Agent => "agent" }),
                    );
                }
                continue;
            }
            Lookup::Flag => {}
        }
        if let Some(why) = flags::managed(key) {
            r.error(
                span.clone(),
                ErrorKind::ManagedFlag,
                format!("{where_} key \"{key}\" is managed by bootstrap: {why}"),
            );
            continue;
        }
        if per_server_node && flags::critical(key) {
            r.error(
                span.clone(),
                ErrorKind::ManagedFlag,
                format!("{where_} key \"{key}\" must be identical on every server or joins fail with \"critical configuration value mismatch\"; set it in [cluster.server_config]"),
            );
            continue;
        }
        let ok = match v.get_ref() {
            toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_) => true,
            toml::Value::Array(items) => items
                .iter()
                .all(|i| matches!(i, toml::Value::String(_) | toml::Value::Integer(_))),
            _ => false,
        };
        if !ok {
            r.error(
                v.span(),
                ErrorKind::InvalidFlagValue,
                format!("{where_} key \"{key}\": a {} cannot be a k3s flag value; expected a string, integer, boolean or list of strings", v.get_ref().type_str()),
            );
            continue;
        }
        out.insert(key.to_string(), v.get_ref().clone());
    }
    out
}

fn install(raw: Option<raw::RawInstall>, r: &mut Report, base: &Path) -> Install {
    let default_cache = base.join(STATE_DIR_NAME).join("cache");
    let Some(i) = raw else {
        return Install {
            source: InstallSource::Download,
            mirror: DEFAULT_MIRROR.into(),
            cache_dir: default_cache,
            airgap_images: false,
            sha256: BTreeMap::new(),
        };
    };
    let source = match &i.source {
        None => InstallSource::Download,
        Some(v) => choice(
            r,
            v,
            "install source",
            &[
                ("download", InstallSource::Download),
                ("upload", InstallSource::Upload),
            ],
        )
        .unwrap_or(InstallSource::Download),
    };
    let mirror = match &i.mirror {
        None => DEFAULT_MIRROR.to_string(),
        Some(v) => match syntax::http_url(v.get_ref()) {
            Ok(u) => u,
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidUrl,
                    format!(
                        "mirror \"{}\" is not valid: {e}; expected an http:// or https:// URL such as \"{DEFAULT_MIRROR}\"",
                        v.get_ref()
                    ),
                );
                v.get_ref().clone()
            }
        },
    };
    // The binary runs as root on every node, and over plain http its sums come over the same
    // unauthenticated channel: only when the inventory says so.
    if let Some(v) = &i.mirror {
        if mirror.starts_with("http://") && i.allow_http != Some(true) {
            r.error(
                v.span(),
                ErrorKind::InvalidUrl,
                format!(
                    "mirror \"{mirror}\" is plain http: the k3s binary every node runs as root, and the sums it is checked against, would come unauthenticated; use https, or set allow_http = true for a mirror on a network you trust (and pin the files' sha256 in [install.sha256])"
                ),
            );
        }
    }
    let mut sha256 = BTreeMap::new();
    for (k, v) in i.sha256.iter().flatten() {
        let file = k.get_ref();
        let file_ok = !file.is_empty()
            && file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let hash = v.get_ref().to_ascii_lowercase();
        if !file_ok {
            r.error(
                k.span(),
                ErrorKind::InvalidName,
                format!("install.sha256: {file:?} is not a release file name (such as \"k3s\" or \"k3s-arm64\")"),
            );
        } else if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!(
                    "install.sha256.{file}: {:?} is not a sha256 (64 hex digits)",
                    v.get_ref()
                ),
            );
        } else {
            sha256.insert(file.clone(), hash);
        }
    }
    let cache_dir = match &i.cache_dir {
        None => default_cache,
        Some(v) => path_value(r, v, "cache_dir", base).unwrap_or(default_cache),
    };
    Install {
        source,
        mirror,
        cache_dir,
        airgap_images: i.airgap_images.unwrap_or(false),
        sha256,
    }
}

fn user_value(r: &mut Report, v: &S<String>, what: &str) -> bool {
    let u = v.get_ref();
    let ok = syntax::user_name(u);
    if !ok {
        r.error(
            v.span(),
            ErrorKind::InvalidName,
            format!("{what} \"{u}\" is not a valid user name; expected letters, digits, '_', '-' or '.'"),
        );
    }
    ok
}

fn bastion_value(r: &mut Report, v: &S<String>) -> Option<Bastion> {
    match syntax::bastion(v.get_ref()) {
        Ok((user, host, port)) => Some(Bastion { user, host, port }),
        Err(e) => {
            r.error(
                v.span(),
                ErrorKind::InvalidHost,
                format!(
                    "bastion \"{}\" is not valid: {e}; expected [user@]host[:port]",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn ssh(raw: Option<raw::RawSsh>, r: &mut Report, base: &Path) -> Ssh {
    let default_known = resolve_path(DEFAULT_KNOWN_HOSTS, base)
        .unwrap_or_else(|_| PathBuf::from(DEFAULT_KNOWN_HOSTS));
    let mut ssh = Ssh {
        user: DEFAULT_SSH_USER.into(),
        port: DEFAULT_SSH_PORT,
        identity_file: None,
        known_hosts: default_known,
        host_key_policy: HostKeyPolicy::Strict,
        bastion: None,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
        explicit: SshExplicit::default(),
    };
    let Some(s) = raw else { return ssh };
    if let Some(u) = &s.user {
        if user_value(r, u, "ssh user") {
            ssh.user = u.get_ref().clone();
            ssh.explicit.user = true;
        }
    }
    if let Some(p) = &s.port {
        if let Some(p) = port(r, p, "ssh port") {
            ssh.port = p;
            ssh.explicit.port = true;
        }
    }
    if let Some(f) = &s.identity_file {
        ssh.identity_file = path_value(r, f, "identity_file", base);
    }
    if let Some(f) = &s.known_hosts {
        if let Some(p) = path_value(r, f, "known_hosts", base) {
            ssh.known_hosts = p;
            ssh.explicit.known_hosts = true;
        }
    }
    if let Some(p) = &s.host_key_policy {
        if let Some(p) = choice(
            r,
            p,
            "host_key_policy",
            &[
                ("strict", HostKeyPolicy::Strict),
                ("accept-new", HostKeyPolicy::AcceptNew),
            ],
        ) {
            ssh.host_key_policy = p;
            ssh.explicit.host_key_policy = true;
        }
    }
    if let Some(b) = &s.bastion {
        ssh.bastion = bastion_value(r, b);
    }
    for (v, slot, what) in [
        (
            &s.connect_timeout,
            &mut ssh.connect_timeout,
            "connect_timeout",
        ),
        (
            &s.command_timeout,
            &mut ssh.command_timeout,
            "command_timeout",
        ),
    ] {
        if let Some(v) = v {
            match syntax::duration(v.get_ref()) {
                Ok(d) => *slot = d,
                Err(e) => r.error(
                    v.span(),
                    ErrorKind::InvalidDuration,
                    format!("{what}: {e}; expected seconds (30) or a string such as \"30s\", \"5m\", \"1h\""),
                ),
            }
        }
    }
    ssh
}

fn node(n: &raw::RawNode, r: &mut Report, base: &Path) -> Option<Node> {
    let name = n.name.get_ref().clone();
    let ctx = format!("node \"{name}\"");
    let mut ok = true;

    if let Err(e) = syntax::dns_subdomain(&name, 63) {
        r.error(
            n.name.span(),
            ErrorKind::InvalidName,
            format!(
                "node name \"{name}\" is not valid: {e}; k3s and the kubelet need a lowercase RFC 1123 name (a-z, 0-9, '-' and '.', at most 63 characters), e.g. \"{}\"",
                suggest_node_name(&name)
            ),
        );
        ok = false;
    }
    ok &= host_value(r, &n.host, &format!("{ctx}: host"));
    let role = choice(
        r,
        &n.role,
        &format!("{ctx}: role"),
        &[("server", Role::Server), ("agent", Role::Agent)],
    );
    let port = match &n.port {
        Some(p) => port(r, p, &format!("{ctx}: port")),
        None => None,
    };
    if let Some(u) = &n.user {
        ok &= user_value(r, u, &format!("{ctx}: user"));
    }
    let identity_file = match &n.identity_file {
        Some(f) => path_value(r, f, &format!("{ctx}: identity_file"), base),
        None => None,
    };
    let bastion = n.bastion.as_ref().and_then(|b| bastion_value(r, b));

    let mut labels = BTreeMap::new();
    for (k, v) in &n.labels {
        if label(r, k, v, &ctx, false) {
            labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    let mut api_labels = BTreeMap::new();
    for (k, v) in &n.api_labels {
        if labels.contains_key(k.get_ref()) {
            r.error(
                k.span(),
                ErrorKind::Duplicate,
                format!(
                    "{ctx}: label \"{}\" is in both labels and api_labels; keep it in one",
                    k.get_ref()
                ),
            );
            continue;
        }
        if label(r, k, v, &ctx, true) {
            api_labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }

    let mut taints: Vec<Taint> = Vec::new();
    for t in &n.taints {
        match syntax::taint(t.get_ref()) {
            Ok((key, value, effect)) => {
                let effect = TaintEffect::parse(&effect).unwrap_or(TaintEffect::NoExecute);
                if taints.iter().any(|x| x.key == key && x.effect == effect) {
                    r.error(
                        t.span(),
                        ErrorKind::Duplicate,
                        format!(
                            "{ctx}: taint \"{}\" repeats key \"{key}\" with effect {}; a node holds one taint per key and effect",
                            t.get_ref(),
                            effect.as_str()
                        ),
                    );
                    continue;
                }
                taints.push(Taint { key, value, effect });
            }
            Err(e) => {
                r.error(
                    t.span(),
                    ErrorKind::InvalidTaint,
                    format!(
                        "{ctx}: taint \"{}\" is not valid: {e}; expected key=value:Effect or key:Effect where Effect is NoSchedule, PreferNoSchedule or NoExecute",
                        t.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }

    let config = match role {
        Some(Role::Server) => {
            config_table(r, &n.config, Role::Server, &format!("{ctx} config"), true)
        }
        Some(Role::Agent) => {
            config_table(r, &n.config, Role::Agent, &format!("{ctx} config"), false)
        }
        None => BTreeMap::new(),
    };

    let role = role?;
    ok.then_some(Node {
        name,
        host: n.host.get_ref().clone(),
        role,
        port,
        user: n.user.as_ref().map(|u| u.get_ref().clone()),
        identity_file,
        bastion,
        labels,
        api_labels,
        taints,
        config,
    })
}

fn suggest_node_name(name: &str) -> String {
    let mut s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() {
        "worker-1".into()
    } else {
        s
    }
}

/// Checks one label; `api_only` labels may use kubelet-restricted namespaces.
fn label(r: &mut Report, k: &S<String>, v: &S<String>, ctx: &str, api_only: bool) -> bool {
    let key = k.get_ref();
    let table = if api_only { "api_labels" } else { "labels" };
    if let Err(e) = syntax::label_key(key) {
        r.error(
            k.span(),
            ErrorKind::InvalidLabel,
            format!("{ctx}: label key \"{key}\" is not valid ({e}); expected [prefix/]name where prefix is a DNS subdomain and name is at most 63 of A-Z a-z 0-9 - _ . starting and ending alphanumeric"),
        );
        return false;
    }
    if let Err(e) = syntax::label_value(v.get_ref()) {
        r.error(
            v.span(),
            ErrorKind::InvalidLabel,
            format!("{ctx}: label \"{key}\" value \"{}\" is not valid ({e}); expected at most 63 of A-Z a-z 0-9 - _ . starting and ending alphanumeric, or empty", v.get_ref()),
        );
        return false;
    }
    if syntax::owned_by_k3s(key) {
        r.error(
            k.span(),
            ErrorKind::RestrictedLabel,
            format!(
                "{ctx}: label \"{key}\" in {table} is set by k3s or the kubelet itself; remove it"
            ),
        );
        return false;
    }
    if !api_only && syntax::kubelet_refuses(key) {
        r.error(
            k.span(),
            ErrorKind::RestrictedLabel,
            format!("{ctx}: label \"{key}\" is in a kubernetes.io/k8s.io namespace the kubelet refuses at registration (k3s would not start with it in node-label); move it to api_labels, which bootstrap applies through the API after the node registers, or use a key outside kubernetes.io such as \"node.role\""),
        );
        return false;
    }
    true
}

fn cross_node_checks(
    raw_nodes: &[raw::RawNode],
    nodes: &[Node],
    ssh: &Ssh,
    cluster: &Cluster,
    r: &mut Report,
    cluster_span: Range<usize>,
) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut hosts: HashMap<(String, u16), &str> = HashMap::new();
    for (i, n) in raw_nodes.iter().enumerate() {
        let name = n.name.get_ref().as_str();
        if let Some(first) = names.get(name) {
            r.error(
                n.name.span(),
                ErrorKind::Duplicate,
                format!(
                    "node name \"{name}\" is already used by node #{}; node names must be unique",
                    first + 1
                ),
            );
        } else {
            names.insert(name, i);
        }
        let port = n
            .port
            .as_ref()
            .and_then(|p| u16::try_from(*p.get_ref()).ok())
            .unwrap_or(ssh.port);
        let key = (n.host.get_ref().to_ascii_lowercase(), port);
        if let Some(other) = hosts.get(&key) {
            r.error(
                n.host.span(),
                ErrorKind::Duplicate,
                format!(
                    "node \"{name}\": host \"{}\" (port {port}) is already node \"{other}\"; each node must be its own machine",
                    n.host.get_ref()
                ),
            );
        } else {
            hosts.insert(key, name);
        }
    }

    let raw_servers: Vec<_> = raw_nodes
        .iter()
        .filter(|n| n.role.get_ref() == "server")
        .collect();
    let roles_valid = raw_nodes
        .iter()
        .all(|n| matches!(n.role.get_ref().as_str(), "server" | "agent"));
    if raw_servers.is_empty() && roles_valid {
        let (span, msg) = match raw_nodes.first() {
            Some(n) => (
                n.role.span(),
                format!("no node has role = \"server\"; a cluster needs at least one (make node \"{}\" a server)", n.name.get_ref()),
            ),
            None => (
                cluster_span,
                "the inventory has no [[node]] entries; add at least one with role = \"server\"".to_string(),
            ),
        };
        r.error(span, ErrorKind::NoServer, msg);
    }
    let servers = raw_servers.len();
    match cluster.datastore {
        Datastore::Sqlite if servers > 1 => {
            if let Some(second) = raw_servers.get(1) {
                r.error(
                    second.role.span(),
                    ErrorKind::Conflict,
                    format!("datastore = \"sqlite\" supports one server, but {servers} nodes are servers; use datastore = \"etcd\" for several servers"),
                );
            }
        }
        Datastore::Etcd if servers > 0 && servers % 2 == 0 => {
            if let Some(last) = raw_servers.last() {
                r.warn(
                    last.role.span(),
                    format!("{servers} servers with embedded etcd: an even count tolerates no more failures than {} and costs more; use an odd number", servers - 1),
                );
            }
        }
        _ => {}
    }
    if servers > 1 && cluster.api_endpoint.is_none() {
        if let Some(second) = raw_servers.get(1) {
            r.warn(
                second.role.span(),
                format!(
                    "{servers} servers but no [cluster] api_endpoint: agents and the kubeconfig will use only \"{}\"; set api_endpoint to a DNS name or VIP that reaches every server",
                    raw_servers.first().map_or("", |s| s.host.get_ref().as_str())
                ),
            );
        }
    }

    // Node addresses inside the pod or service range would be routed into the cluster.
    let ranges: Vec<_> = [&cluster.cluster_cidr, &cluster.service_cidr]
        .iter()
        .flat_map(|s| s.split(','))
        .filter_map(|c| syntax::cidr(c.trim()).ok())
        .collect();
    for n in nodes {
        if let Ok(ip) = n.host.parse::<std::net::IpAddr>() {
            if let Some(net) = ranges.iter().find(|net| syntax::cidr_contains(**net, ip)) {
                if let Some(raw) = raw_nodes.iter().find(|x| x.name.get_ref() == &n.name) {
                    r.error(
                        raw.host.span(),
                        ErrorKind::InvalidCidr,
                        format!(
                            "node \"{}\": host {ip} is inside the cluster range {}/{}; change cluster_cidr/service_cidr so they do not overlap the hosts' network",
                            n.name, net.0, net.1
                        ),
                    );
                }
            }
        }
    }
}

fn addons(a: raw::RawAddons, r: &mut Report, nodes: &[Node], shipped: &Shipped) -> Addons {
    let schedulable = nodes.iter().filter(|n| n.schedulable()).count().max(1);
    let archives = [
        a.longhorn.as_ref().and_then(|x| x.chart_archive.as_ref()),
        a.traefik.as_ref().and_then(|x| x.chart_archive.as_ref()),
        a.cert_manager
            .as_ref()
            .and_then(|x| x.chart_archive.as_ref()),
        a.sealed_secrets
            .as_ref()
            .and_then(|x| x.chart_archive.as_ref()),
    ]
    .map(|v| v.and_then(|v| chart_archive_value(r, v, shipped)));
    let [lh_archive, tr_archive, cm_archive, ss_archive] = archives;
    let cert_manager = a.cert_manager.map(|c| CertManager {
        chart_archive: cm_archive,
        ..cert_manager(c, r)
    });
    let traefik = a.traefik.map(|t| Traefik {
        chart_archive: tr_archive,
        ..traefik(t, r, cert_manager.as_ref())
    });
    Addons {
        longhorn: a.longhorn.map(|l| Longhorn {
            chart_archive: lh_archive,
            ..longhorn(l, r, schedulable)
        }),
        traefik,
        cert_manager,
        sealed_secrets: a.sealed_secrets.map(|s| SealedSecrets {
            version: chart_version_value(
                r,
                s.version.as_ref(),
                "sealed_secrets",
                false,
                SEALED_SECRETS_CHART_VERSION,
            ),
            chart_archive: ss_archive,
            crds_applied: s.crds_applied.as_ref().map(|v| {
                chart_version_value(
                    r,
                    Some(v),
                    "sealed_secrets crds_applied",
                    false,
                    SEALED_SECRETS_CHART_VERSION,
                )
            }),
        }),
    }
}

fn longhorn(l: raw::RawLonghorn, r: &mut Report, schedulable: usize) -> Longhorn {
    let version = chart_version_value(
        r,
        l.version.as_ref(),
        "longhorn",
        false,
        LONGHORN_CHART_VERSION,
    );
    // Longhorn's advice: 3 replicas with three or more storage nodes, else one per node.
    let default_replicas = schedulable.clamp(1, 3) as u32;
    let replicas = match &l.replicas {
        Some(v) => {
            let n = count(r, v, "longhorn replicas").unwrap_or(default_replicas);
            if n as usize > schedulable {
                r.warn(
                    v.span(),
                    format!("longhorn replicas = {n} but only {schedulable} nodes accept workloads; volumes will stay degraded"),
                );
            }
            n
        }
        None => default_replicas,
    };
    let data_path = match &l.data_path {
        None => DEFAULT_LONGHORN_DATA_PATH.to_string(),
        Some(v) => {
            if !v.get_ref().starts_with('/') {
                r.error(
                    v.span(),
                    ErrorKind::InvalidPath,
                    format!("longhorn data_path \"{}\" must be an absolute path on the nodes, e.g. \"{DEFAULT_LONGHORN_DATA_PATH}\"", v.get_ref()),
                );
            }
            v.get_ref().clone()
        }
    };
    let mut classes: Vec<StorageClass> = Vec::new();
    let mut default_span: Option<Range<usize>> = None;
    for sc in &l.storage_classes {
        let name = sc.name.get_ref().clone();
        let ctx = format!("storage class \"{name}\"");
        subdomain_value(r, &sc.name, "storage class name");
        if name == "longhorn" {
            r.error(
                sc.name.span(),
                ErrorKind::Duplicate,
                "storage class \"longhorn\" is created by the Longhorn chart itself; pick another name",
            );
        }
        if classes.iter().any(|c| c.name == name) {
            r.error(
                sc.name.span(),
                ErrorKind::Duplicate,
                format!("storage class \"{name}\" is defined twice"),
            );
        }
        let reclaim_policy = sc
            .reclaim_policy
            .as_ref()
            .and_then(|v| {
                choice(
                    r,
                    v,
                    &format!("{ctx}: reclaim_policy"),
                    &[
                        ("Delete", ReclaimPolicy::Delete),
                        ("Retain", ReclaimPolicy::Retain),
                    ],
                )
            })
            .unwrap_or(ReclaimPolicy::Delete);
        let sc_replicas = match &sc.replicas {
            Some(v) => {
                let n = count(r, v, &format!("{ctx}: replicas")).unwrap_or(replicas);
                if n as usize > schedulable {
                    r.warn(
                        v.span(),
                        format!("{ctx}: replicas = {n} but only {schedulable} nodes accept workloads; its volumes will stay degraded"),
                    );
                }
                n
            }
            None => replicas,
        };
        let default = sc.default.as_ref().is_some_and(|d| *d.get_ref());
        if default {
            if default_span.is_some() {
                if let Some(d) = &sc.default {
                    r.error(
                        d.span(),
                        ErrorKind::Conflict,
                        format!("{ctx}: only one storage class can be the default"),
                    );
                }
            }
            default_span = sc.default.as_ref().map(|d| d.span());
        }
        let volume_binding_mode = sc
            .volume_binding_mode
            .as_ref()
            .and_then(|v| {
                choice(
                    r,
                    v,
                    &format!("{ctx}: volume_binding_mode"),
                    &[
                        ("Immediate", VolumeBindingMode::Immediate),
                        (
                            "WaitForFirstConsumer",
                            VolumeBindingMode::WaitForFirstConsumer,
                        ),
                    ],
                )
            })
            .unwrap_or(VolumeBindingMode::Immediate);
        let fs_type = sc.fs_type.as_ref().and_then(|v| {
            choice(
                r,
                v,
                &format!("{ctx}: fs_type"),
                &[("ext4", "ext4"), ("xfs", "xfs")],
            )
            .map(str::to_string)
        });
        let data_locality = sc.data_locality.as_ref().and_then(|v| {
            choice(
                r,
                v,
                &format!("{ctx}: data_locality"),
                &[
                    ("disabled", "disabled"),
                    ("best-effort", "best-effort"),
                    ("strict-local", "strict-local"),
                ],
            )
            .map(str::to_string)
        });
        let mut parameters = BTreeMap::new();
        for (k, v) in &sc.parameters {
            let owned = match k.get_ref().as_str() {
                "numberOfReplicas" => Some("replicas"),
                "dataLocality" => Some("data_locality"),
                "fsType" => Some("fs_type"),
                _ => None,
            };
            if let Some(field) = owned {
                r.error(
                    k.span(),
                    ErrorKind::Conflict,
                    format!(
                        "{ctx}: parameter \"{}\" is set by `{field}`; use that instead",
                        k.get_ref()
                    ),
                );
                continue;
            }
            // A key goes into YAML: only the characters parameter names have (Longhorn's are
            // camelCase; CSI's have `/` and `.`), so none can start another line or object.
            let key = k.get_ref();
            let key_ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
            if !key_ok {
                r.error(
                    k.span(),
                    ErrorKind::InvalidName,
                    format!(
                        "{ctx}: parameter name {key:?} is not valid; use letters, digits, '.', '_', '-' and '/'"
                    ),
                );
                continue;
            }
            parameters.insert(key.clone(), v.get_ref().clone());
        }
        // `diskSelector`: the volume's replicas only on disks carrying every tag listed
        // (Longhorn docs `nodes-and-volumes/nodes/storage-tags.md`; comma-separated).
        if let Some(tags) = &sc.disk_selector {
            let mut ok = Vec::new();
            for t in tags {
                let v = t.get_ref();
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    r.error(
                        t.span(),
                        ErrorKind::InvalidName,
                        format!("{ctx}: disk tag {v:?} is not valid; use letters, digits, '.', '_' and '-'"),
                    );
                } else {
                    ok.push(v.clone());
                }
            }
            if parameters.contains_key("diskSelector") {
                r.error(
                    tags.first().map(|t| t.span()).unwrap_or(sc.name.span()),
                    ErrorKind::Conflict,
                    format!("{ctx}: diskSelector is set twice (disk_selector and parameters); keep disk_selector"),
                );
            } else if !ok.is_empty() {
                parameters.insert("diskSelector".into(), ok.join(","));
            }
        }
        classes.push(StorageClass {
            name,
            reclaim_policy,
            replicas: sc_replicas,
            default,
            allow_volume_expansion: sc.allow_volume_expansion.unwrap_or(true),
            volume_binding_mode,
            fs_type,
            data_locality,
            parameters,
        });
    }
    if let Some(t) = &l.backup_target {
        let s = t.get_ref();
        let scheme_ok = ["s3://", "nfs://", "cifs://", "azblob://"]
            .iter()
            .any(|p| s.starts_with(p) && s.len() > p.len());
        if !scheme_ok {
            r.error(
                t.span(),
                ErrorKind::InvalidUrl,
                format!("longhorn backup_target \"{s}\" is not valid; expected s3://bucket@region/path/, nfs://host:/path, cifs://host/share or azblob://container@core.windows.net/"),
            );
        }
    }
    if let Some(s) = &l.backup_target_credential_secret {
        subdomain_value(r, s, "backup_target_credential_secret");
    }
    let recurring_jobs = recurring_jobs(&l.recurring_jobs, r, l.backup_target.is_some());
    Longhorn {
        version,
        replicas,
        data_path,
        storage_classes: classes,
        backup_target: l.backup_target.map(|v| v.into_inner()),
        backup_target_credential_secret: l.backup_target_credential_secret.map(|v| v.into_inner()),
        chart_archive: None,
        recurring_jobs,
        uninstall: l.uninstall.unwrap_or(false),
    }
}

/// Tasks of a Longhorn `RecurringJob` (the CRD's enum, longhorn v1.12.1
/// `chart/templates/crds.yaml`, kind RecurringJob).
const RECURRING_TASKS: [&str; 8] = [
    "snapshot",
    "snapshot-force-create",
    "snapshot-cleanup",
    "snapshot-delete",
    "backup",
    "backup-force-create",
    "filesystem-trim",
    "system-backup",
];

fn recurring_jobs(
    raw: &[raw::RawRecurringJob],
    r: &mut Report,
    has_backup_target: bool,
) -> Vec<RecurringJob> {
    let mut out: Vec<RecurringJob> = Vec::new();
    for j in raw {
        let name = j.name.get_ref().clone();
        let ctx = format!("recurring job \"{name}\"");
        // The name is the object's, and Longhorn puts it in volume labels (63 characters).
        dns_label_value(r, &j.name, "recurring job name");
        if out.iter().any(|x| x.name == name) {
            r.error(
                j.name.span(),
                ErrorKind::Duplicate,
                format!("{ctx} is defined twice"),
            );
        }
        let task = j.task.get_ref().clone();
        if !RECURRING_TASKS.contains(&task.as_str()) {
            r.error(
                j.task.span(),
                ErrorKind::InvalidValue,
                format!(
                    "{ctx}: task \"{task}\" is not one Longhorn knows; expected one of {}",
                    RECURRING_TASKS.join(", ")
                ),
            );
        } else if task.starts_with("backup") && !has_backup_target {
            r.error(
                j.task.span(),
                ErrorKind::MissingKey,
                format!("{ctx}: a backup job needs backup_target (and usually backup_target_credential_secret) under [addons.longhorn]"),
            );
        }
        let cron = j.cron.get_ref().trim().to_string();
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let cron_ok = fields.len() == 5
            && fields.iter().all(|f| {
                f.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '*' | '/' | ',' | '-'))
            });
        if !cron_ok {
            r.error(
                j.cron.span(),
                ErrorKind::InvalidValue,
                format!("{ctx}: cron \"{cron}\" is not a five-field schedule such as \"0 */6 * * *\" (minute hour day month weekday)"),
            );
        }
        let retain = count(r, &j.retain, &format!("{ctx}: retain")).unwrap_or(1);
        let concurrency = match &j.concurrency {
            Some(v) => count(r, v, &format!("{ctx}: concurrency"))
                .unwrap_or(1)
                .max(1),
            None => 1,
        };
        let mut groups = Vec::new();
        for g in j.groups.iter().flatten() {
            if dns_label_value(r, g, &format!("{ctx}: group")) {
                groups.push(g.get_ref().clone());
            }
        }
        if j.groups.is_none() {
            groups.push("default".into());
        }
        out.push(RecurringJob {
            name,
            task,
            cron,
            retain,
            concurrency,
            groups,
        });
    }
    out
}

fn cert_manager(c: raw::RawCertManager, r: &mut Report) -> CertManager {
    let span = r.key_span("cert_manager");
    let version = chart_version_value(
        r,
        c.version.as_ref(),
        "cert_manager",
        true,
        CERT_MANAGER_CHART_VERSION,
    );
    let staging = c.issuers.as_ref().and_then(|i| i.staging).unwrap_or(true);
    let production = c
        .issuers
        .as_ref()
        .and_then(|i| i.production)
        .unwrap_or(true);
    match &c.acme_email {
        Some(e) => {
            if let Err(why) = syntax::email(e.get_ref()) {
                r.error(
                    e.span(),
                    ErrorKind::InvalidEmail,
                    format!("acme_email \"{}\" is not an e-mail address ({why}); expected name@domain.tld; Let's Encrypt sends expiry notices there", e.get_ref()),
                );
            } else {
                let domain = e.get_ref().rsplit('@').next().unwrap_or("").to_ascii_lowercase();
                let reserved = ["example.com", "example.org", "example.net"]
                    .iter()
                    .any(|d| domain == *d || domain.ends_with(&format!(".{d}")));
                if reserved {
                    r.warn(
                        e.span(),
                        format!("acme_email uses {domain}; Let's Encrypt refuses that domain, so the issuers will not become Ready"),
                    );
                }
            }
        }
        None if staging || production => r.error(
            span,
            ErrorKind::MissingKey,
            "[addons.cert_manager] needs acme_email for the Let's Encrypt issuers; add acme_email = \"you@your-domain\" or set issuers = { staging = false, production = false }",
        ),
        None => {}
    }
    let ingress_class = match &c.ingress_class {
        None => "traefik".to_string(),
        Some(v) => {
            subdomain_value(r, v, "ingress_class");
            v.get_ref().clone()
        }
    };
    CertManager {
        version,
        acme_email: c.acme_email.map(|v| v.into_inner()),
        ingress_class,
        staging,
        production,
        chart_archive: None,
    }
}

fn traefik(t: raw::RawTraefik, r: &mut Report, cm: Option<&CertManager>) -> Traefik {
    let version = chart_version_value(
        r,
        t.version.as_ref(),
        "traefik",
        false,
        TRAEFIK_CHART_VERSION,
    );
    let namespace = match &t.namespace {
        None => DEFAULT_TRAEFIK_NAMESPACE.to_string(),
        Some(v) => {
            dns_label_value(r, v, "traefik namespace");
            v.get_ref().clone()
        }
    };
    let mut routes: Vec<WeightedRoute> = Vec::new();
    for rt in &t.routes {
        let name = rt.name.get_ref().clone();
        let ctx = format!("route \"{name}\"");
        subdomain_value(r, &rt.name, "route name");
        dns_label_value(r, &rt.namespace, &format!("{ctx}: namespace"));
        if routes
            .iter()
            .any(|x| x.name == name && &x.namespace == rt.namespace.get_ref())
        {
            r.error(
                rt.name.span(),
                ErrorKind::Duplicate,
                format!(
                    "{ctx} is defined twice in namespace \"{}\"",
                    rt.namespace.get_ref()
                ),
            );
        }
        let host = rt.host.get_ref();
        let host_ok = host.parse::<std::net::IpAddr>().is_err()
            && syntax::dns_subdomain(&host.to_ascii_lowercase(), 253).is_ok();
        if !host_ok {
            r.error(
                rt.host.span(),
                ErrorKind::InvalidHost,
                format!(
                    "{ctx}: host \"{host}\" is not a DNS name; expected e.g. \"www.example.com\""
                ),
            );
        }
        let tls_issuer = rt.tls_issuer.as_ref().and_then(|v| {
            let issuer = choice(
                r,
                v,
                &format!("{ctx}: tls_issuer"),
                &[("staging", AcmeIssuer::Staging), ("production", AcmeIssuer::Production)],
            )?;
            let enabled = cm.is_some_and(|c| c.issuers().contains(&issuer));
            if !enabled {
                r.error(
                    v.span(),
                    ErrorKind::Conflict,
                    format!("{ctx}: tls_issuer \"{}\" needs [addons.cert_manager] with that issuer enabled", v.get_ref()),
                );
            }
            Some(issuer)
        });
        let mut services: Vec<WeightedService> = Vec::new();
        for s in &rt.services {
            dns_label_value(r, &s.name, &format!("{ctx}: service name"));
            let ns = match &s.namespace {
                Some(n) => {
                    dns_label_value(r, n, &format!("{ctx}: service namespace"));
                    n.get_ref().clone()
                }
                None => rt.namespace.get_ref().clone(),
            };
            let p = port(
                r,
                &s.port,
                &format!("{ctx}: service \"{}\" port", s.name.get_ref()),
            )
            .unwrap_or(0);
            let weight = match &s.weight {
                None => 1,
                Some(w) => {
                    match u32::try_from(*w.get_ref()) {
                        Ok(w) => w,
                        Err(_) => {
                            r.error(
                            w.span(),
                            ErrorKind::InvalidNumber,
                            format!("{ctx}: weight {} is not valid; expected a non-negative integer", w.get_ref()),
                        );
                            1
                        }
                    }
                }
            };
            services.push(WeightedService {
                name: s.name.get_ref().clone(),
                namespace: ns,
                port: p,
                weight,
            });
        }
        if services.is_empty() {
            r.error(
                rt.name.span(),
                ErrorKind::InvalidNumber,
                format!("{ctx}: services is empty; list at least one {{ name, port, weight }}"),
            );
        } else if services.iter().all(|s| s.weight == 0) {
            r.error(
                rt.name.span(),
                ErrorKind::InvalidNumber,
                format!("{ctx}: every weight is 0, so no traffic would be served; give at least one service a weight above 0"),
            );
        }
        // A cookie name is an RFC 6265 token; Traefik sets it on the first answer.
        let sticky_cookie = rt.sticky_cookie.as_ref().and_then(|c| {
            let v = c.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
            if !ok {
                r.error(
                    c.span(),
                    ErrorKind::InvalidName,
                    format!("{ctx}: sticky_cookie {v:?} is not a cookie name; use letters, digits, '_', '-' and '.'"),
                );
            }
            ok.then(|| v.clone())
        });
        routes.push(WeightedRoute {
            name,
            namespace: rt.namespace.get_ref().clone(),
            host: host.clone(),
            tls_issuer,
            sticky_cookie,
            services,
        });
    }
    let (node_selector, tolerations) = placement(
        &t.node_selector,
        t.tolerations.as_ref(),
        r,
        "[addons.traefik]",
    );
    let crds_applied = t.crds_applied.as_ref().map(|v| {
        chart_version_value(
            r,
            Some(v),
            "traefik crds_applied",
            false,
            TRAEFIK_CHART_VERSION,
        )
    });
    Traefik {
        version,
        namespace,
        redirect_https: t.redirect_https.unwrap_or(true),
        routes,
        chart_archive: None,
        node_selector,
        tolerations,
        crds_applied,
    }
}

fn manifests(
    raw: &[raw::RawManifest],
    r: &mut Report,
    shipped: &Shipped,
    shown_base: &Path,
    variables: &BTreeMap<String, String>,
) -> Vec<Manifest> {
    let mut out: Vec<Manifest> = Vec::new();
    for m in raw {
        let Some(path) = shipped_path(r, &m.path, "manifest path", shipped) else {
            continue;
        };
        let shown = m.path.get_ref();
        let name = match &m.name {
            Some(n) => {
                if syntax::dns_subdomain(n.get_ref(), 253).is_err() || n.get_ref().contains('.') {
                    r.error(
                        n.span(),
                        ErrorKind::InvalidName,
                        format!("manifest name \"{}\" is not valid; expected an RFC 1123 label (lowercase a-z, 0-9, '-'); k3s names the AddOn after it", n.get_ref()),
                    );
                }
                n.get_ref().clone()
            }
            None => {
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default();
                let stem = file.split('.').next().unwrap_or("").to_string();
                if syntax::dns_label(&stem).is_err() {
                    r.error(
                        m.path.span(),
                        ErrorKind::InvalidName,
                        format!("manifest \"{shown}\": k3s would name its AddOn \"{stem}\" (the file name up to the first '.'), which is not an RFC 1123 label; add name = \"...\" with lowercase a-z, 0-9 and '-'"),
                    );
                }
                stem
            }
        };
        if RESERVED_MANIFEST_NAMES.contains(&name.as_str()) {
            r.error(
                m.name.as_ref().map_or(m.path.span(), |n| n.span()),
                ErrorKind::Duplicate,
                format!("manifest name \"{name}\" is used by k3s or a bootstrap add-on; set another name = \"...\""),
            );
        } else if out.iter().any(|x| x.name == name) {
            r.error(
                m.name.as_ref().map_or(m.path.span(), |n| n.span()),
                ErrorKind::Duplicate,
                format!("manifest name \"{name}\" is used twice; give one of them another name = \"...\""),
            );
        }
        match std::fs::metadata(&path) {
            Ok(md) if md.is_file() => match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let shown_path = if Path::new(shown).is_absolute() || shown.starts_with('~') {
                        path.clone()
                    } else {
                        shown_base.join(shown)
                    };
                    for d in undefined_variables(&text, &shown_path, variables) {
                        r.error_in(d);
                    }
                }
                Err(e) => r.error(
                    m.path.span(),
                    ErrorKind::InvalidPath,
                    format!("manifest \"{shown}\" cannot be read as UTF-8 text: {e}"),
                ),
            },
            Ok(_) => r.error(
                m.path.span(),
                ErrorKind::InvalidPath,
                format!("manifest \"{shown}\" is a directory, not a file; list each YAML file in its own [[manifests]]"),
            ),
            Err(e) => r.error(
                m.path.span(),
                ErrorKind::InvalidPath,
                format!(
                    "manifest \"{shown}\" not found ({}: {e}); paths are relative to the inventory's directory {}",
                    path.display(),
                    shipped.base.display()
                ),
            ),
        }
        let after = m.after.iter().map(|a| a.get_ref().clone()).collect();
        out.push(Manifest { path, name, after });
    }
    out
}
