//! Host facts: everything the plan needs to know about one host, read in a
//! single round trip (one shell script, one line per fact) and parsed by a pure
//! function so the parser is tested from recorded output without a host.

use std::collections::BTreeMap;

use super::b64;
use crate::addons::AddonFacts;
use crate::inventory::K3sVersion;
use crate::k3s::{self, Role};

/// Directories bootstrap writes files into through a temp file beside them.
const TEMP_DIRS: [&str; 6] = [
    "/usr/local/bin",
    "/etc/systemd/system",
    "/etc/rancher/k3s",
    "/etc/rancher/k3s/config.yaml.d",
    "/var/lib/rancher/k3s/agent/images",
    "/var/lib/rancher/k3s/server/manifests",
];

/// A temp file of bootstrap's: `.<name>.bootstrap-tmp-<hex>` (put_file) or
/// `.<name>.bootstrap-upload` (an upload before its checksum was verified), directly in one of
/// [`TEMP_DIRS`]. Nothing else is ever removed as a leftover.
pub fn is_leftover(path: &str) -> bool {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return false;
    };
    let tmp = name
        .rsplit_once(".bootstrap-tmp-")
        .is_some_and(|(_, hex)| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()));
    TEMP_DIRS.contains(&dir)
        && name.starts_with('.')
        && !name.contains(['/', '\n'])
        && (tmp || name.ends_with(".bootstrap-upload"))
}

/// The script run (as root) on every host: `key<TAB>value` lines, file contents base64. It
/// reads, never writes, and forks as little as it can (every process costs a millisecond or
/// two, and a run reads 30 hosts side by side): one `sha256sum` for every file the plan
/// compares, one `stat` for modes and links, one `systemctl show` for every unit.
/// `longhorn` adds Longhorn's node prerequisites, `snapshot_dir` the state of a custom etcd
/// snapshot directory.
pub fn script(longhorn: bool, snapshot_dir: Option<&str>, sysctl: &[String]) -> String {
    let mut units = String::from("k3s.service k3s-agent.service");
    if longhorn {
        units.push_str(" iscsid.service iscsid.socket multipathd.service multipathd.socket");
    }
    for u in crate::os::units() {
        units.push(' ');
        units.push_str(u);
    }
    let mut s = format!(
        r#"set -u
p() {{ printf '%s\t%s\n' "$1" "$2"; }}
B=/usr/local/bin; S=/etc/systemd/system; R={CONFIG_DIR}; D={DATA_DIR}
. /etc/os-release 2>/dev/null
p os.id "${{ID:-unknown}}"
p os.version "${{VERSION_ID:-unknown}}"
p arch "$(uname -m)"
read -r hn 2>/dev/null </proc/sys/kernel/hostname || hn=unknown
p hostname "$hn"
if [ -d /run/systemd/system ]; then p init systemd; elif [ -x /sbin/openrc-run ]; then p init openrc; else p init other; fi
if command -v curl >/dev/null 2>&1; then p curl yes; fi
if [ -f $B/k3s ]; then p bin.present yes; fi
if [ -x $B/k3s ]; then p bin.version "$($B/k3s --version 2>/dev/null)"; fi
sha256sum $S/k3s.service $S/k3s-agent.service $S/k3s.service.env $S/k3s-agent.service.env \
  $B/k3s-uninstall.sh $B/k3s-agent-uninstall.sh $B/k3s-killall.sh $R/config.yaml \
  $R/config.yaml.d/* $D/agent/images/* $D/server/manifests/* $R/registries.yaml {APT_CONF} 2>/dev/null | while read -r h f; do p "sha:$f" "$h"; done
stat --printf 'stat:%n\t%a\t%N\n' $R/config.yaml $R/registries.yaml \
  $B/kubectl $B/crictl $B/ctr 2>/dev/null
# kubectl, crictl or ctr elsewhere in PATH (install.sh makes no link then); builtins only.
o=$IFS; IFS=:; for d in $PATH; do [ "$d" = $B ] && continue; for c in kubectl crictl ctr; do [ -e "$d/$c" ] && p which.$c "$d/$c"; done; done; IFS=$o
systemctl show -p Id,LoadState,ActiveState,UnitFileState {units} 2>/dev/null | while IFS= read -r l; do p sys "$l"; done
# Temp files an interrupted upload or write left (ssh/session.rs put_file, apply/host.rs).
for f in $B/.*.bootstrap-tmp-* $B/.*.bootstrap-upload $S/.*.bootstrap-tmp-* $R/.*.bootstrap-tmp-* $R/config.yaml.d/.*.bootstrap-tmp-* $D/agent/images/.*.bootstrap-tmp-* $D/agent/images/.*.bootstrap-upload $D/server/manifests/.*.bootstrap-tmp-*; do if [ -e "$f" ]; then p leftover "$f"; fi; done
# Cluster data as k3s decides it: etcd's WAL directory (pkg/etcd/etcd.go:305-318
# IsInitialized), or SQLite's database (pkg/cluster: kine's default state.db).
if [ -d $D/server/db/etcd/member/wal ] || [ -f $D/server/db/state.db ]; then p server.db yes; fi
# This host's addresses, to tell a Node registered from it (k3s's InternalIP is an interface
# address: pkg/util/net.go:138-150).
p addrs "$(hostname -I 2>/dev/null)"
if [ -s $D/server/token ]; then p server.token.b64 "$(base64 -w0 $D/server/token)"; fi
if [ -s $D/server/agent-token ]; then p server.agent_token.b64 "$(base64 -w0 $D/server/agent-token)"; fi
if [ -s /etc/rancher/node/password ]; then p node.password yes; fi
# What k3s-uninstall.sh would remove, if any of it is there (reset plans from it).
r=; for f in $S/k3s.service $S/k3s-agent.service $B/k3s $R $D /var/lib/kubelet; do if [ -e "$f" ]; then r="$r $f"; fi; done
p residue "$r"
# Contents the plan compares or recovers from (tokens, kubeconfig): base64, never printed.
# registries.yaml: bootstrap's (its first line) or the operator's own.
if [ -f $R/registries.yaml ]; then l=; read -r l <$R/registries.yaml; if [ "$l" = {REG_HEADER} ]; then p registries.ours yes; fi; fi
if [ -f $R/config.yaml ]; then p config.b64 "$(base64 -w0 $R/config.yaml)"; fi
if [ -f $R/k3s.yaml ]; then p kubeconfig.b64 "$(base64 -w0 $R/k3s.yaml)"; fi
# The client CA that signs the admin certificate in k3s.yaml (src/kubeconfig.rs checks it).
if [ -s $D/server/tls/client-ca.crt ]; then p client_ca.b64 "$(base64 -w0 $D/server/tls/client-ca.crt)"; fi
# The extra manifests bootstrap wrote (src/addons).
x=; if [ -f $D/server/manifests/{EXTRA_RECORD} ]; then while read -r l; do x="$x $l"; done <$D/server/manifests/{EXTRA_RECORD}; fi
p addons.extra "$x"
"#,
        CONFIG_DIR = k3s::CONFIG_DIR,
        DATA_DIR = k3s::DATA_DIR,
        EXTRA_RECORD = crate::addons::EXTRA_RECORD,
        APT_CONF = crate::os::APT_CONF,
        REG_HEADER = crate::ssh::sh_quote(crate::inventory::REGISTRIES_HEADER),
    );
    s.push_str(&crate::os::script(sysctl));
    if let Some(d) = snapshot_dir {
        let d = crate::ssh::sh_quote(d);
        s.push_str(&format!(
            "if [ -d {d} ]; then p etcd.snapdir \"$(stat -c %a {d})\"; else p etcd.snapdir missing; fi\n"
        ));
    }
    if longhorn {
        s.push_str(
            r#"# Longhorn's node prerequisites (src/addons/longhorn.rs).
PATH="$PATH:/usr/sbin:/sbin"
for b in iscsiadm mount.nfs cryptsetup dmsetup; do if command -v $b >/dev/null 2>&1; then p addons.lh.bin.$b yes; else p addons.lh.bin.$b no; fi; done
p addons.lh.multipath.maps "$(dmsetup ls --target multipath 2>/dev/null | grep -vc 'No devices' || true)"
for m in iscsi_tcp dm_crypt nfs; do if [ -d /sys/module/$m ] || { [ $m = nfs ] && grep -qw nfs4 /proc/filesystems 2>/dev/null; }; then v=loaded; elif modinfo $m >/dev/null 2>&1; then v=available; else v=missing; fi; p addons.lh.mod.$m $v; done
c=; if [ -r /run/systemd/container ]; then read -r c </run/systemd/container || true; fi
if [ -z "$c" ]; then c=$(systemd-detect-virt -c 2>/dev/null || true); fi
p addons.lh.container "$c"
"#,
        );
    }
    s.push_str("p end ok\n");
    s
}

/// The state of one systemd service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `systemctl is-active`: active, activating, inactive, failed, or empty when unknown.
    pub active: String,
    pub enabled: String,
    pub unit_sha256: Option<String>,
    pub env_sha256: Option<String>,
    pub uninstall_sha256: Option<String>,
}

impl ServiceFacts {
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }
    pub fn is_installed(&self) -> bool {
        self.unit_sha256.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub os_id: String,
    pub os_version: String,
    pub arch: String,
    pub hostname: String,
    pub init: String,
    pub has_curl: bool,
    /// `/usr/local/bin/k3s` exists.
    pub bin_present: bool,
    /// Temp files of bootstrap an interrupted run left (see [`is_leftover`]).
    pub leftovers: Vec<String>,
    /// `k3s --version`'s version, e.g. `v1.36.3+k3s1`.
    pub bin_version: Option<K3sVersion>,
    /// What is at `/usr/local/bin/{kubectl,crictl,ctr}`: link name → target (`k3s` for a
    /// link install.sh made, `file` for a real file).
    pub links: BTreeMap<String, String>,
    /// Those of kubectl, crictl and ctr found elsewhere in PATH, with where.
    pub path_commands: BTreeMap<String, String>,
    pub server: ServiceFacts,
    pub agent: ServiceFacts,
    pub killall_sha256: Option<String>,
    pub config_sha256: Option<String>,
    pub config_mode: Option<u32>,
    pub dropins: BTreeMap<String, String>,
    /// Cluster data exists (etcd's WAL, or SQLite's database): this host has been a server
    /// of a cluster.
    pub server_db: bool,
    /// The host's own addresses (`hostname -I`).
    pub addresses: Vec<String>,
    /// The custom etcd snapshot directory's mode (`700`), or `missing`, when it was asked for.
    pub snapshot_dir: Option<String>,
    /// k3s's `server/token` and `server/agent-token` (secrets: never print them).
    pub token_file: Option<String>,
    pub agent_token_file: Option<String>,
    pub node_password: bool,
    /// Paths of k3s that are present (units, binary, config, data): empty on a clean host.
    pub residue: Vec<String>,
    pub images: BTreeMap<String, String>,
    pub manifests: BTreeMap<String, String>,
    /// Longhorn prerequisites and the extra-manifest record (src/addons).
    pub addons: AddonFacts,
    /// The current config.yaml (holds tokens: never print it).
    pub config: Option<String>,
    /// k3s's admin kubeconfig, on servers (holds a client key: never print it).
    pub kubeconfig: Option<String>,
    /// `server/tls/client-ca.crt`, on servers: what signs the admin certificate.
    pub client_ca: Option<String>,
    /// `/etc/rancher/k3s/registries.yaml`: its sha256 and mode, and whether bootstrap wrote
    /// it (its first line).
    pub registries_sha256: Option<String>,
    pub registries_mode: Option<u32>,
    pub registries_ours: bool,
    /// The host's own settings (`[os]`).
    pub os: crate::os::OsFacts,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactsError {
    #[error(
        "the facts script output ended early (no end marker); the host may have closed the session"
    )]
    Truncated,
    #[error("unsupported architecture {0:?}; k3s ships amd64, arm64 and arm")]
    Arch(String),
}

fn mode(v: &str) -> Option<u32> {
    u32::from_str_radix(v, 8).ok()
}

/// The service facts of unit `name` (`k3s` or `k3s-agent`).
fn svc<'a>(f: &'a mut HostFacts, name: &str) -> Option<&'a mut ServiceFacts> {
    match name {
        "k3s" => Some(&mut f.server),
        "k3s-agent" => Some(&mut f.agent),
        _ => None,
    }
}

/// A `stat --printf '%N'` value: the link's target, or `file` for anything else.
fn link_target(n: &str) -> String {
    match n.split_once(" -> ") {
        Some((_, target)) => target
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string(),
        None => "file".into(),
    }
}

impl HostFacts {
    /// Parse the output of [`script`].
    pub fn parse(out: &str) -> Result<HostFacts, FactsError> {
        let mut f = HostFacts::default();
        let mut ended = false;
        let mut unit = String::new();
        let (dropins, images, manifests) = (
            format!("{}/", k3s::CONFIG_DROPIN_DIR),
            format!("{}/", k3s::IMAGES_DIR),
            format!("{}/", k3s::MANIFESTS_DIR),
        );
        for line in out.lines() {
            let Some((key, value)) = line.split_once('\t') else {
                continue;
            };
            match key {
                "os.id" => f.os_id = value.trim().into(),
                "os.version" => f.os_version = value.trim().into(),
                "arch" => f.arch = value.trim().into(),
                "hostname" => f.hostname = value.trim().into(),
                "init" => f.init = value.trim().into(),
                "curl" => f.has_curl = value == "yes",
                "bin.present" => f.bin_present = value == "yes",
                // `k3s version v1.36.3+k3s1 (b56cca06)`
                "bin.version" => {
                    f.bin_version = value.split_whitespace().find_map(|w| w.parse().ok())
                }
                "server.db" => f.server_db = value == "yes",
                "addrs" => f.addresses = value.split_whitespace().map(String::from).collect(),
                "etcd.snapdir" => f.snapshot_dir = Some(value.trim().to_string()),
                "server.token.b64" => f.token_file = b64(value.trim()),
                "server.agent_token.b64" => f.agent_token_file = b64(value.trim()),
                "node.password" => f.node_password = value == "yes",
                "leftover" if is_leftover(value) => f.leftovers.push(value.to_string()),
                "residue" => f.residue = value.split_whitespace().map(String::from).collect(),
                "config.b64" => f.config = b64(value.trim()),
                "kubeconfig.b64" => f.kubeconfig = b64(value.trim()),
                "client_ca.b64" => f.client_ca = b64(value.trim()),
                "sys" => {
                    let Some((k, v)) = value.split_once('=') else {
                        continue;
                    };
                    if k == "Id" {
                        unit = v.to_string();
                        continue;
                    }
                    if f.os.unit_property(&unit, k, v) {
                        continue;
                    }
                    let lh = &mut f.addons.prereq;
                    let slot = match (unit.as_str(), k) {
                        ("k3s.service", "ActiveState") => &mut f.server.active,
                        ("k3s.service", "UnitFileState") => &mut f.server.enabled,
                        ("k3s-agent.service", "ActiveState") => &mut f.agent.active,
                        ("k3s-agent.service", "UnitFileState") => &mut f.agent.enabled,
                        ("iscsid.service", "ActiveState") => &mut lh.iscsid.0,
                        ("iscsid.socket", "ActiveState") => &mut lh.iscsid.1,
                        ("multipathd.service", "ActiveState") => &mut lh.multipathd.0,
                        ("multipathd.socket", "ActiveState") => &mut lh.multipathd.1,
                        _ => continue,
                    };
                    *slot = v.to_string();
                }
                "registries.ours" => f.registries_ours = value == "yes",
                "end" => ended = true,
                _ if key.starts_with("os.") => f.os.parse_line(&key[3..], value),
                _ => {
                    if let Some(path) = key.strip_prefix("sha:") {
                        let sha = Some(value.trim().to_string());
                        if path == k3s::CONFIG_PATH {
                            f.config_sha256 = sha;
                        } else if path == crate::inventory::REGISTRIES_PATH {
                            f.registries_sha256 = sha;
                        } else if path == crate::os::APT_CONF {
                            f.os.apt_conf_sha256 = sha;
                        } else if path == "/usr/local/bin/k3s-killall.sh" {
                            f.killall_sha256 = sha;
                        } else if let Some(n) = path.strip_prefix(dropins.as_str()) {
                            f.dropins.insert(n.into(), value.trim().into());
                        } else if let Some(n) = path.strip_prefix(images.as_str()) {
                            f.images.insert(n.into(), value.trim().into());
                        } else if let Some(n) = path.strip_prefix(manifests.as_str()) {
                            f.manifests.insert(n.into(), value.trim().into());
                        } else if let Some(u) = path.strip_prefix("/etc/systemd/system/") {
                            if let Some(s) = u.strip_suffix(".service.env") {
                                if let Some(s) = svc(&mut f, s) {
                                    s.env_sha256 = sha;
                                }
                            } else if let Some(s) = u.strip_suffix(".service") {
                                if let Some(s) = svc(&mut f, s) {
                                    s.unit_sha256 = sha;
                                }
                            }
                        } else if let Some(s) = path
                            .strip_prefix("/usr/local/bin/")
                            .and_then(|b| b.strip_suffix("-uninstall.sh"))
                        {
                            if let Some(s) = svc(&mut f, s) {
                                s.uninstall_sha256 = sha;
                            }
                        }
                    } else if let Some(path) = key.strip_prefix("stat:") {
                        let mut parts = value.splitn(2, '\t');
                        let m = parts.next().and_then(mode);
                        let n = parts.next().unwrap_or("");
                        if path == k3s::CONFIG_PATH {
                            f.config_mode = m;
                        } else if path == crate::inventory::REGISTRIES_PATH {
                            f.registries_mode = m;
                        } else if let Some(l) = path.strip_prefix("/usr/local/bin/") {
                            f.links.insert(l.into(), link_target(n));
                        }
                    } else if let Some(c) = key.strip_prefix("which.") {
                        f.path_commands
                            .entry(c.to_string())
                            .or_insert_with(|| value.trim().to_string());
                    } else if let Some(k) = key.strip_prefix("addons.") {
                        f.addons.parse_line(k, value.trim());
                    }
                }
            }
        }
        if !ended {
            return Err(FactsError::Truncated);
        }
        Ok(f)
    }

    /// The release architecture name (`amd64`, `arm64`, `arm`) and binary name.
    pub fn k3s_arch(&self) -> Result<(&'static str, &'static str), FactsError> {
        match self.arch.as_str() {
            "x86_64" | "amd64" => Ok(("amd64", "k3s")),
            "aarch64" | "arm64" => Ok(("arm64", "k3s-arm64")),
            a if a.starts_with("arm") => Ok(("arm", "k3s-armhf")),
            other => Err(FactsError::Arch(other.into())),
        }
    }

    pub fn service(&self, role: Role) -> &ServiceFacts {
        match role {
            Role::Server => &self.server,
            Role::Agent => &self.agent,
        }
    }

    /// The role k3s is installed as on this host, if any.
    pub fn installed_role(&self) -> Option<Role> {
        if self.server.is_installed() {
            Some(Role::Server)
        } else if self.agent.is_installed() {
            Some(Role::Agent)
        } else {
            None
        }
    }

    /// The links install.sh would create: those of kubectl, crictl and ctr with nothing at
    /// `/usr/local/bin/<name>` and no such command elsewhere in PATH. An existing file or
    /// link, k3s's or not, is left alone (install.sh:784-796, create_symlinks).
    pub fn missing_links(&self) -> Vec<&'static str> {
        k3s::LINKS
            .iter()
            .copied()
            .filter(|l| !self.links.contains_key(*l) && !self.path_commands.contains_key(*l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: &str = "os.id\tdebian\nos.version\t12\narch\tx86_64\nhostname\tworker-1\ninit\tsystemd\ncurl\tyes\n\
sys\tId=k3s.service\nsys\tActiveState=inactive\nsys\tUnitFileState=\nsys\t\n\
sys\tId=k3s-agent.service\nsys\tActiveState=inactive\nsys\tUnitFileState=\n\
residue\t\naddons.extra\t\nend\tok\n";

    #[test]
    fn leftovers_are_only_bootstraps_own_temp_files() {
        for p in [
            "/usr/local/bin/..k3s.bootstrap-upload.bootstrap-tmp-0a1b2c",
            "/usr/local/bin/.k3s.bootstrap-upload",
            "/etc/rancher/k3s/.config.yaml.bootstrap-tmp-ff00",
            "/var/lib/rancher/k3s/server/manifests/.bootstrap-longhorn.yaml.bootstrap-tmp-12",
        ] {
            assert!(is_leftover(p), "{p}");
        }
        for p in [
            "/usr/local/bin/k3s",
            "/usr/local/bin/.k3s.bootstrap-tmp-",
            "/usr/local/bin/.k3s.bootstrap-tmp-xyz",
            "/tmp/.k3s.bootstrap-tmp-00",
            "/usr/local/bin/sub/.k3s.bootstrap-tmp-00",
            "/etc/.passwd.bootstrap-tmp-00",
            "/usr/local/bin/k3s.bootstrap-upload",
        ] {
            assert!(!is_leftover(p), "{p}");
        }
        let text = FRESH.replace(
            "residue\t",
            "leftover\t/usr/local/bin/..k3s.bootstrap-upload.bootstrap-tmp-0a1b\nleftover\t/etc/shadow\nresidue\t",
        );
        let f = HostFacts::parse(&text).unwrap();
        assert_eq!(
            f.leftovers,
            ["/usr/local/bin/..k3s.bootstrap-upload.bootstrap-tmp-0a1b"]
        );
    }

    #[test]
    fn parses_a_fresh_host() {
        let f = HostFacts::parse(FRESH).unwrap();
        assert_eq!(f.os_id, "debian");
        assert_eq!(f.hostname, "worker-1");
        assert!(f.has_curl);
        assert!(!f.bin_present);
        assert_eq!(f.installed_role(), None);
        assert_eq!(f.missing_links(), vec!["kubectl", "crictl", "ctr"]);
        assert_eq!(f.k3s_arch().unwrap(), ("amd64", "k3s"));
        assert!(f.residue.is_empty());
        assert_eq!(f.agent.active, "inactive");
    }

    #[test]
    fn parses_an_installed_agent() {
        let out = FRESH.replace(
            "end\tok",
            "bin.present\tyes\nbin.version\tk3s version v1.36.3+k3s1 (b56cca06)\ngo version go1.24.6\n\
sha:/etc/systemd/system/k3s-agent.service\tdef\n\
sha:/etc/systemd/system/k3s-agent.service.env\te3b0\n\
sha:/usr/local/bin/k3s-agent-uninstall.sh\t123\n\
sha:/usr/local/bin/k3s-killall.sh\t456\n\
sha:/etc/rancher/k3s/config.yaml\t789\n\
sha:/etc/rancher/k3s/config.yaml.d/50-join.yaml\tfff\n\
sha:/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.gz\t999\n\
stat:/etc/rancher/k3s/config.yaml\t600\t'/etc/rancher/k3s/config.yaml'\n\
stat:/usr/local/bin/kubectl\t777\t'/usr/local/bin/kubectl' -> 'k3s'\n\
stat:/usr/local/bin/ctr\t755\t'/usr/local/bin/ctr'\nwhich.crictl\t/usr/bin/crictl\n\
residue\t /usr/local/bin/k3s /etc/rancher/k3s\nend\tok",
        )
        .replace(
            "sys\tId=k3s-agent.service\nsys\tActiveState=inactive\nsys\tUnitFileState=",
            "sys\tId=k3s-agent.service\nsys\tActiveState=active\nsys\tUnitFileState=enabled",
        );
        let f = HostFacts::parse(&out).unwrap();
        assert_eq!(f.bin_version, "v1.36.3+k3s1".parse().ok());
        assert!(f.bin_present);
        assert_eq!(f.installed_role(), Some(Role::Agent));
        assert!(f.agent.is_active());
        assert_eq!(f.agent.enabled, "enabled");
        assert_eq!(f.agent.env_sha256.as_deref(), Some("e3b0"));
        assert_eq!(f.agent.uninstall_sha256.as_deref(), Some("123"));
        assert_eq!(f.killall_sha256.as_deref(), Some("456"));
        assert_eq!(f.config_sha256.as_deref(), Some("789"));
        assert_eq!(f.config_mode, Some(0o600));
        // ctr is a file of the host's, crictl is elsewhere in PATH: neither is linked.
        assert_eq!(f.missing_links(), Vec::<&str>::new());
        assert_eq!(f.links["ctr"], "file");
        assert_eq!(
            f.dropins.get("50-join.yaml").map(String::as_str),
            Some("fff")
        );
        assert_eq!(f.images.len(), 1);
        assert_eq!(f.residue, ["/usr/local/bin/k3s", "/etc/rancher/k3s"]);
        assert_eq!(f.config, None);
        assert_eq!(
            f.server,
            ServiceFacts {
                active: "inactive".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn decodes_file_contents_and_longhorn_units() {
        let out = FRESH.replace(
            "end\tok",
            "config.b64\tdG9rZW46ICJ4Igo=\nsys\tId=iscsid.socket\nsys\tActiveState=active\nend\tok",
        );
        let f = HostFacts::parse(&out).unwrap();
        assert_eq!(f.config.as_deref(), Some("token: \"x\"\n"));
        assert_eq!(f.kubeconfig, None);
        assert_eq!(f.addons.prereq.iscsid.1, "active");
    }

    #[test]
    fn truncated_output_is_an_error() {
        let cut = &FRESH[..FRESH.len() / 2];
        assert_eq!(HostFacts::parse(cut), Err(FactsError::Truncated));
    }

    #[test]
    fn the_script_runs_in_sh() {
        let keys = vec!["vm.max_map_count".to_string()];
        for (lh, dir) in [(false, None), (true, Some("/srv/etcd snapshots"))] {
            let s = script(lh, dir, &keys);
            assert!(s.starts_with("set -u\n") && s.ends_with("p end ok\n"));
            assert_eq!(s.contains("modinfo"), lh);
            sh(&["-n", "-c", &s]);
        }
    }

    /// `sh ARGS...`, which must succeed; its stdout.
    fn sh(args: &[&str]) -> String {
        let out = std::process::Command::new("sh")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `[os]` lines, run here (they only read), parse into what this machine has.
    #[test]
    fn the_os_lines_read_this_machine() {
        let keys = vec!["vm.max_map_count".to_string(), "fs.no_such_key".to_string()];
        let s = format!(
            "p() {{ printf '%s\\t%s\\n' \"$1\" \"$2\"; }}\n{}",
            crate::os::script(&keys)
        );
        let mut f = crate::os::OsFacts::default();
        for l in sh(&["-c", &s]).lines() {
            let (k, v) = l.split_once('\t').unwrap();
            f.parse_line(k.strip_prefix("os.").unwrap(), v);
        }
        let want = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap();
        match &f.sysctl["vm.max_map_count"] {
            crate::os::Live::Value { value, .. } => assert_eq!(value, want.trim()),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.sysctl["fs.no_such_key"], crate::os::Live::Missing);
        assert!(f.cap_sys_time.is_some());
    }

    #[test]
    fn arch_names_follow_the_release() {
        let mut f = HostFacts::default();
        for (uname, want) in [
            ("aarch64", ("arm64", "k3s-arm64")),
            ("armv7l", ("arm", "k3s-armhf")),
        ] {
            f.arch = uname.into();
            assert_eq!(f.k3s_arch().unwrap(), want);
        }
        f.arch = "s390x".into();
        assert!(f.k3s_arch().is_err());
    }
}
