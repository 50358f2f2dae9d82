//! Pure syntax checks for names, labels, taints, versions, addresses and URLs. Each returns a
//! short reason on failure; `validate` wraps it into a located message.

use std::net::IpAddr;
use std::time::Duration;

/// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "it is {} characters long; the limit is 63",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(if c.is_ascii_uppercase() {
            format!("it contains the uppercase letter '{c}'; use lowercase")
        } else {
            format!("it contains '{c}'; only a-z, 0-9 and '-' are allowed")
        });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("it starts or ends with '-'".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, ≤ `max` characters in all.
pub(crate) fn dns_subdomain(s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "it is {} characters long; the limit is {max}",
            s.len()
        ));
    }
    for label in s.split('.') {
        dns_label(label).map_err(|e| {
            if label.is_empty() {
                "it has an empty part between dots".to_string()
            } else {
                format!("part \"{label}\": {e}")
            }
        })?;
    }
    Ok(())
}

/// A host name as typed by a user (case-insensitive DNS name) or an IP address.
pub(crate) fn host(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if s.starts_with('[') && s.ends_with(']') {
        return Err("write an IPv6 address without brackets".into());
    }
    if let Some((user, _)) = s.split_once('@') {
        return Err(format!(
            "it contains '@'; put the user \"{user}\" in `user`, not in the host"
        ));
    }
    if s.contains(':') && !s.contains("::") && s.matches(':').count() == 1 {
        return Err(
            "it contains ':PORT'; give only the address (a node's SSH port goes in `port`)".into(),
        );
    }
    if s.contains("://") || s.contains('/') {
        return Err("it looks like a URL or path; give only the address".into());
    }
    let lower = s.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if lower
        .split('.')
        .all(|p| p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("it looks like an IPv4 address but is not a valid one".into());
    }
    dns_subdomain(lower, 253)
        .map_err(|e| format!("it is neither an IP address nor a DNS name: {e}"))
}

/// Name part of a Kubernetes qualified name: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, ≤ 63.
fn qualified_name_part(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.len() > 63 {
        return Err(format!(
            "the {what} is {} characters long; the limit is 63",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the {what} contains '{c}'; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let first = s.chars().next().unwrap_or('a');
    let last = s.chars().last().unwrap_or('a');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(format!(
            "the {what} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Label or taint key: `[prefix/]name`, prefix a DNS subdomain ≤ 253.
pub(crate) fn label_key(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("the prefix before '/' is empty".into());
            }
            dns_subdomain(prefix, 253)
                .map_err(|e| format!("the prefix \"{prefix}\" is not a DNS subdomain: {e}"))?;
            if name.contains('/') {
                return Err("it contains more than one '/'".into());
            }
            qualified_name_part(name, "name after '/'")
        }
        None => qualified_name_part(s, "key"),
    }
}

/// Label value: empty, or the name-part syntax.
pub(crate) fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    qualified_name_part(s, "value")
}

fn label_namespace(key: &str) -> Option<&str> {
    key.split_once('/').map(|(p, _)| p)
}

/// Labels in `kubernetes.io`/`k8s.io` namespaces that the kubelet may set on itself
/// (`k8s.io/kubelet/pkg/apis/well_known_labels.go`, `IsKubeletLabel`).
pub(crate) fn kubelet_refuses(key: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
    ];
    let Some(ns) = label_namespace(key) else {
        return false;
    };
    let in_ns = |n: &str| ns == n || ns.ends_with(&format!(".{n}"));
    let kubernetes = in_ns("kubernetes.io") || in_ns("k8s.io");
    let allowed =
        ALLOWED.contains(&key) || in_ns("kubelet.kubernetes.io") || in_ns("node.kubernetes.io");
    kubernetes && !allowed
}

/// Labels k3s or the kubelet set and own; the inventory must not fight over them.
pub(crate) fn owned_by_k3s(key: &str) -> bool {
    matches!(
        key,
        "node-role.kubernetes.io/control-plane"
            | "node-role.kubernetes.io/etcd"
            | "node-role.kubernetes.io/master"
            | "kubernetes.io/hostname"
            | "kubernetes.io/arch"
            | "kubernetes.io/os"
            | "beta.kubernetes.io/arch"
            | "beta.kubernetes.io/os"
            | "node.kubernetes.io/instance-type"
            | "egress.k3s.io/cluster"
    )
}

/// Taint effect as Kubernetes spells it.
pub(crate) const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Parses `key=value:Effect` or `key:Effect` into (key, value, effect).
pub(crate) fn taint(s: &str) -> Result<(String, Option<String>, String), String> {
    let Some((kv, effect)) = s.rsplit_once(':') else {
        return Err("it has no \":Effect\"".into());
    };
    if !TAINT_EFFECTS.contains(&effect) {
        let hint = TAINT_EFFECTS
            .iter()
            .copied()
            .find(|e| e.eq_ignore_ascii_case(effect))
            .or_else(|| closest(effect, TAINT_EFFECTS.iter().copied()))
            .map(|e| format!(" (did you mean {e}?)"))
            .unwrap_or_else(|| format!(" (one of {})", TAINT_EFFECTS.join(", ")));
        return Err(format!("the effect \"{effect}\" is unknown{hint}"));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    label_key(key).map_err(|e| format!("bad key \"{key}\": {e}"))?;
    if let Some(v) = value {
        label_value(v).map_err(|e| format!("bad value \"{v}\": {e}"))?;
    }
    Ok((
        key.to_string(),
        value.filter(|v| !v.is_empty()).map(str::to_string),
        effect.to_string(),
    ))
}

/// `vMAJOR.MINOR.PATCH+k3sN` → (major, minor, patch, n).
pub(crate) fn k3s_version(s: &str) -> Result<(u32, u32, u32, u32), String> {
    let guess = || -> String {
        let core: String = s
            .trim_start_matches('v')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts = core.split('.').filter(|p| !p.is_empty()).count();
        if parts == 3 {
            format!("; did you mean \"v{core}+k3s1\"?")
        } else {
            String::new()
        }
    };
    let Some(rest) = s.strip_prefix('v') else {
        return Err(format!("it does not start with 'v'{}", guess()));
    };
    let Some((core, build)) = rest.split_once("+k3s") else {
        if rest.contains("-k3s") {
            return Err(format!(
                "the k3s suffix is written with '+', not '-'{}",
                guess()
            ));
        }
        return Err(format!("it has no \"+k3sN\" release suffix{}", guess()));
    };
    let nums: Vec<&str> = core.split('.').collect();
    let parse = |p: &str| -> Option<u32> {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            None
        } else {
            p.parse().ok()
        }
    };
    match (nums.as_slice(), parse(build)) {
        ([a, b, c], Some(n)) => match (parse(a), parse(b), parse(c)) {
            (Some(a), Some(b), Some(c)) => Ok((a, b, c, n)),
            _ => Err("MAJOR, MINOR and PATCH must be numbers".into()),
        },
        (_, None) => Err("the number after \"+k3s\" is missing or not a number".into()),
        _ => Err(format!("\"{core}\" is not MAJOR.MINOR.PATCH{}", guess())),
    }
}

/// A chart version: `MAJOR.MINOR.PATCH` with optional `-pre`/`+build`, with or without a leading
/// `v` as the chart requires.
pub(crate) fn chart_version(s: &str, with_v: bool) -> Result<(), String> {
    let core = match (s.strip_prefix('v'), with_v) {
        (Some(rest), true) => rest,
        (None, true) => {
            return Err(format!(
                "this chart's versions start with 'v'; write \"v{s}\""
            ))
        }
        (Some(rest), false) => {
            return Err(format!(
                "this chart's versions have no 'v'; write \"{rest}\""
            ))
        }
        (None, false) => s,
    };
    let end = core.find(['-', '+']).unwrap_or(core.len());
    let (nums, extra) = core.split_at(end);
    let ok_nums = nums.split('.').count() == 3
        && nums
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let ok_extra = extra
        .chars()
        .skip(1)
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        && extra.len() != 1;
    if ok_nums && ok_extra {
        Ok(())
    } else {
        Err("expected MAJOR.MINOR.PATCH, e.g. \"1.2.3\"".into())
    }
}

/// http(s) URL without credentials, query or fragment. Returns it without a trailing '/'.
pub(crate) fn http_url(s: &str) -> Result<String, String> {
    let rest = if let Some(r) = s.strip_prefix("https://") {
        r
    } else if let Some(r) = s.strip_prefix("http://") {
        r
    } else {
        return Err("it does not start with http:// or https://".into());
    };
    if s.contains(['?', '#']) || s.chars().any(char::is_whitespace) {
        return Err("it contains a query, fragment or whitespace".into());
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err("it contains credentials; they would end up in logs".into());
    }
    let (host_part, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err("unclosed '[' in the address".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host_part.is_empty() {
        return Err("it has no host".into());
    }
    host(host_part).map_err(|e| format!("bad host \"{host_part}\": {e}"))?;
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("bad port \"{p}\"")),
        }
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// `ADDR/PREFIX` → (address, prefix).
pub(crate) fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(format!("\"{s}\" has no /PREFIX"));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("\"{addr}\" is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok((ip, p)),
        _ => Err(format!("prefix \"/{prefix}\" is not 0-{max}")),
    }
}

fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (true, u32::from(v4) as u128),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

fn mask(v4: bool, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let top = u128::MAX << (128 - u32::from(prefix));
    // For IPv4 the address sits in the low 32 bits, so the mask moves down with it.
    if v4 {
        top >> 96
    } else {
        top
    }
}

pub(crate) fn cidr_contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    let (v4a, a) = ip_bits(net.0);
    let (v4b, b) = ip_bits(ip);
    if v4a != v4b {
        return false;
    }
    let m = mask(v4a, net.1);
    a & m == b & m
}

pub(crate) fn cidrs_overlap(x: (IpAddr, u8), y: (IpAddr, u8)) -> bool {
    let (v4x, _) = ip_bits(x.0);
    let (v4y, _) = ip_bits(y.0);
    if v4x != v4y {
        return false;
    }
    let p = x.1.min(y.1);
    cidr_contains((x.0, p), y.0)
}

/// A plausible e-mail address: `local@domain.tld`.
pub(crate) fn email(s: &str) -> Result<(), String> {
    let Some((local, domain)) = s.split_once('@') else {
        return Err("it has no '@'".into());
    };
    if local.is_empty() || local.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err("the part before '@' is empty or has spaces".into());
    }
    if !domain.contains('.') {
        return Err(format!("the domain \"{domain}\" has no dot"));
    }
    dns_subdomain(&domain.to_ascii_lowercase(), 253)
        .map_err(|e| format!("the domain \"{domain}\" is not valid: {e}"))
}

/// Seconds as an integer, or `"90s"`, `"5m"`, `"1h"`, `"500ms"`.
/// The longest duration an inventory may give (a day): every one is added to `Instant::now()`,
/// which panics on overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(86_400);

pub(crate) fn duration(v: &toml::Value) -> Result<Duration, String> {
    let d = duration_unbounded(v)?;
    if d > MAX_DURATION {
        return Err(format!(
            "it is longer than a day ({}s at most)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

fn duration_unbounded(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(Duration::from_secs(*n as u64)),
        toml::Value::Integer(_) => Err("it must be at least 1 second".into()),
        toml::Value::String(s) => {
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("\"{s}\" does not start with a number"))?;
            let d = match unit {
                "ms" => Duration::from_millis(n),
                "s" | "" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                _ => return Err(format!("unit \"{unit}\" is not ms, s, m or h")),
            };
            if d.is_zero() {
                Err("it must be more than zero".into())
            } else {
                Ok(d)
            }
        }
        other => Err(format!("a {} is not a duration", other.type_str())),
    }
}

/// An SSH user name: what `ssh.user` and a bastion's `user@` may be (1-32 of letters, digits,
/// `_`, `-`, `.`, not starting with `-`): nothing a shell or ssh would read as more.
pub(crate) fn user_name(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !u.starts_with('-')
}

/// `[user@]host[:port]`, IPv6 in brackets when a port follows.
pub(crate) fn bastion(s: &str) -> Result<(Option<String>, String, u16), String> {
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, _)) if !user_name(u) => {
            return Err(format!(
            "the user \"{u}\" is not a valid user name; expected letters, digits, '_', '-' or '.'"
        ))
        }
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (h, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err("unclosed '['".into()),
        }
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
        (h, Some(p))
    } else {
        (rest, None)
    };
    host(h).map_err(|e| format!("bad host \"{h}\": {e}"))?;
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port \"{p}\"")),
        },
    };
    Ok((user, h.to_string(), port))
}

/// Template variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.len() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(label_key("node.role").is_ok());
        assert!(label_key("example.com/tier").is_ok());
        assert!(label_key("Example.com/tier").is_err());
        assert!(label_key("a/b/c").is_err());
        assert!(label_key("-x").is_err());
        assert!(label_key(&"a".repeat(64)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("data_base.1").is_ok());
        assert!(label_value("a b").is_err());
        assert!(kubelet_refuses("node-role.kubernetes.io/worker"));
        assert!(kubelet_refuses("foo.k8s.io/x"));
        assert!(!kubelet_refuses("topology.kubernetes.io/zone"));
        assert!(!kubelet_refuses("node.kubernetes.io/pool"));
        assert!(!kubelet_refuses("x.kubelet.kubernetes.io/y"));
        assert!(!kubelet_refuses("node.role"));
    }

    #[test]
    fn taints() {
        assert_eq!(
            taint("node-role.kubernetes.io/control-plane=true:NoSchedule").unwrap(),
            (
                "node-role.kubernetes.io/control-plane".into(),
                Some("true".into()),
                "NoSchedule".into()
            )
        );
        assert_eq!(taint("dedicated:NoExecute").unwrap().1, None);
        assert!(taint("foo").is_err());
        assert!(taint("foo=bar:noschedule")
            .unwrap_err()
            .contains("NoSchedule"));
        // A typo gets the closest effect, anything else the list.
        assert!(taint("k:NoSchedul")
            .unwrap_err()
            .ends_with("(did you mean NoSchedule?)"));
        assert!(taint("k:Evict")
            .unwrap_err()
            .contains("(one of NoSchedule, PreferNoSchedule, NoExecute)"));
        assert!(taint("=bar:NoSchedule").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(k3s_version("v1.36.3+k3s1").unwrap(), (1, 36, 3, 1));
        assert!(k3s_version("1.36.3+k3s1")
            .unwrap_err()
            .contains("v1.36.3+k3s1"));
        assert!(k3s_version("v1.36.3-k3s1").unwrap_err().contains('+'));
        assert!(k3s_version("v1.36+k3s1").is_err());
        assert!(k3s_version("v1.36.3+k3s").is_err());
        assert!(chart_version("1.12.1", false).is_ok());
        assert!(chart_version("v1.12.1", false).is_err());
        assert!(chart_version("v1.21.2", true).is_ok());
        assert!(chart_version("40.1.4+up40.1.0", false).is_ok());
        assert!(chart_version("1.2", false).is_err());
    }

    #[test]
    fn hosts_and_urls() {
        assert!(host("203.0.113.10").is_ok());
        assert!(host("2001:db8::1").is_ok());
        assert!(host("k8s.example.com").is_ok());
        assert!(host("K8S.Example.com").is_ok());
        assert!(host("203.0.113.300").is_err());
        assert!(host("root@h").unwrap_err().contains("user"));
        assert!(host("h:22").unwrap_err().contains("port"));
        assert!(host("bad_host").is_err());
        assert_eq!(
            http_url("http://10.213.1.1:8080/").unwrap(),
            "http://10.213.1.1:8080"
        );
        assert!(http_url("ftp://x").is_err());
        assert!(http_url("https://u:p@x").is_err());
        assert!(http_url("https://[::1]:80/x").is_ok());
    }

    #[test]
    fn cidrs() {
        let pods = cidr("10.42.0.0/16").unwrap();
        let svc = cidr("10.43.0.0/16").unwrap();
        assert!(!cidrs_overlap(pods, svc));
        assert!(cidrs_overlap(cidr("10.0.0.0/8").unwrap(), svc));
        assert!(cidr_contains(svc, "10.43.0.10".parse().unwrap()));
        assert!(!cidr_contains(svc, "10.42.0.10".parse().unwrap()));
        assert!(cidr_contains(
            cidr("0.0.0.0/0").unwrap(),
            "1.2.3.4".parse().unwrap()
        ));
        assert!(cidr_contains(
            cidr("fd00::/8").unwrap(),
            "fd12::1".parse().unwrap()
        ));
        assert!(cidr("10.0.0.0/33").is_err());
    }

    #[test]
    fn durations_and_misc() {
        assert_eq!(
            duration(&toml::Value::Integer(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            duration(&toml::Value::String("2m".into())).unwrap(),
            Duration::from_secs(120)
        );
        assert!(duration(&toml::Value::String("2 weeks".into())).is_err());
        assert!(duration(&toml::Value::Integer(0)).is_err());
        // Bounded: a huge value would overflow `Instant + Duration` later.
        assert!(duration(&toml::Value::Integer(i64::MAX))
            .unwrap_err()
            .contains("longer than a day"));
        assert!(duration(&toml::Value::String("99999999999h".into())).is_err());
        assert!(duration(&toml::Value::String("24h".into())).is_ok());
        assert_eq!(
            bastion("jump@bastion.example.com:2222").unwrap(),
            (Some("jump".into()), "bastion.example.com".into(), 2222)
        );
        // The user part is a user name, like ssh.user: nothing a shell would expand.
        let e = bastion("j`x`$(id)@host").unwrap_err();
        assert!(e.contains("not a valid user name"), "{e}");
        assert!(bastion("@host").is_err());
        assert!(email("ops@dirtbikechina.com").is_ok());
        assert!(email("ops.example.com").is_err());
        assert_eq!(closest("lables", ["labels", "taints"]), Some("labels"));
        assert!(identifier("prod_cpu"));
        assert!(!identifier("9x"));
    }
}
