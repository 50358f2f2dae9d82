//! Host facts: everything the plan needs to know about one host, read in a
//! single round trip (one shell script, one line per fact) and parsed by a pure
//! function so the parser is tested from recorded output without a host.

use std::collections::BTreeMap;

use super::b64;
use crate::addons::AddonFacts;
use crate::inventory::K3sVersion;
use crate::k3s::{self, Role};

/// The script run (as root) on every host. Prints `key<TAB>value` lines; a
/// missing file hashes to `-`. It reads, never writes.
pub const HOST_FACTS_SCRIPT: &str = r#"set -u
h() { if [ -f "$1" ]; then sha256sum "$1" 2>/dev/null | cut -d' ' -f1; else echo -; fi; }
m() { stat -c %a "$1" 2>/dev/null || echo -; }
p() { printf '%s\t%s\n' "$1" "$2"; }
# Every unit's state in one systemctl call (each call costs a few ms).
SVC=$(systemctl show -p Id,ActiveState,UnitFileState,ActiveEnterTimestampMonotonic \
  k3s.service k3s-agent.service iscsid.service iscsid.socket multipathd.service multipathd.socket 2>/dev/null)
# u UNIT PROPERTY: that property of that unit, from $SVC.
u() { printf '%s\n' "$SVC" | awk -v u="$1" -v k="$2" 'BEGIN{RS="";FS="\n"} {id="";v="";for(i=1;i<=NF;i++){n=index($i,"=");if(substr($i,1,n-1)=="Id")id=substr($i,n+1);if(substr($i,1,n-1)==k)v=substr($i,n+1)}; if(id==u){print v;exit}}'; }
. /etc/os-release 2>/dev/null
p os.id "${ID:-unknown}"
p os.version "${VERSION_ID:-unknown}"
p arch "$(uname -m)"
p hostname "$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)"
p init "$(if [ -d /run/systemd/system ]; then echo systemd; elif [ -x /sbin/openrc-run ]; then echo openrc; else echo other; fi)"
p curl "$(command -v curl >/dev/null 2>&1 && echo yes || echo no)"
p bin.present "$( [ -f /usr/local/bin/k3s ] && echo yes || echo no)"
p bin.version "$( [ -x /usr/local/bin/k3s ] && /usr/local/bin/k3s --version 2>/dev/null | head -n1 | awk '{print $3}' || echo -)"
for l in kubectl crictl ctr; do p "link.$l" "$(readlink "/usr/local/bin/$l" 2>/dev/null || { [ -e "/usr/local/bin/$l" ] && echo file; } || echo -)"; done
for s in k3s k3s-agent; do
  p "unit.$s.sha256" "$(h /etc/systemd/system/$s.service)"
  p "env.$s.sha256" "$(h /etc/systemd/system/$s.service.env)"
  p "env.$s.mode" "$(m /etc/systemd/system/$s.service.env)"
  p "svc.$s.active" "$(u $s.service ActiveState)"
  p "svc.$s.enabled" "$(u $s.service UnitFileState)"
  p "svc.$s.since" "$(u $s.service ActiveEnterTimestampMonotonic)"
  p "uninstall.$s.sha256" "$(h /usr/local/bin/$s-uninstall.sh)"
done
p killall.sha256 "$(h /usr/local/bin/k3s-killall.sh)"
p config.sha256 "$(h /etc/rancher/k3s/config.yaml)"
p config.mode "$(m /etc/rancher/k3s/config.yaml)"
for f in /etc/rancher/k3s/config.yaml.d/*; do [ -f "$f" ] && p "dropin.${f##*/}" "$(h "$f")"; done
p server.db "$( [ -d /var/lib/rancher/k3s/server/db ] && echo yes || echo no)"
p server.token "$( [ -s /var/lib/rancher/k3s/server/token ] && echo yes || echo no)"
p node.password "$( [ -s /etc/rancher/node/password ] && echo yes || echo no)"
# What k3s-uninstall.sh would remove, if any of it is there (reset plans from it).
p residue "$(for f in /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service /usr/local/bin/k3s /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/kubelet; do [ -e "$f" ] && printf '%s ' "$f"; done)"
for f in /var/lib/rancher/k3s/agent/images/*; do [ -f "$f" ] && p "image.${f##*/}" "$(h "$f")"; done
for f in /var/lib/rancher/k3s/server/manifests/*; do [ -f "$f" ] && p "manifest.${f##*/}" "$(h "$f")"; done
# Contents the plan compares or recovers from (tokens, kubeconfig): base64, never printed.
p config.b64 "$(base64 -w0 /etc/rancher/k3s/config.yaml 2>/dev/null || echo -)"
p kubeconfig.b64 "$(base64 -w0 /etc/rancher/k3s/k3s.yaml 2>/dev/null || echo -)"
# Add-ons: Longhorn prerequisites and the extra manifests bootstrap wrote (src/addons).
PATH="$PATH:/usr/sbin:/sbin"
for b in iscsiadm mount.nfs cryptsetup dmsetup; do p "addons.lh.bin.$b" "$(command -v $b >/dev/null 2>&1 && echo yes || echo no)"; done
p addons.lh.iscsid "$(u iscsid.service ActiveState)/$(u iscsid.socket ActiveState)"
p addons.lh.multipathd "$(u multipathd.service ActiveState)/$(u multipathd.socket ActiveState)"
p addons.lh.multipath.maps "$(dmsetup ls --target multipath 2>/dev/null | grep -vc 'No devices' || true)"
for m in iscsi_tcp dm_crypt; do p "addons.lh.mod.$m" "$(if [ -d /sys/module/$m ]; then echo loaded; elif modinfo $m >/dev/null 2>&1; then echo available; else echo missing; fi)"; done
p addons.lh.container "$(cat /run/systemd/container 2>/dev/null || systemd-detect-virt -c 2>/dev/null || true)"
p addons.extra "$(cat /var/lib/rancher/k3s/server/manifests/.bootstrap-extra 2>/dev/null | tr '\n' ' ')"
p end ok
"#;

/// The state of one systemd service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `systemctl is-active`: active, activating, inactive, failed, or empty when unknown.
    pub active: String,
    pub enabled: String,
    /// When it last became active (monotonic µs); a change means it restarted.
    pub since: u64,
    pub unit_sha256: Option<String>,
    pub env_sha256: Option<String>,
    pub env_mode: Option<u32>,
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
    /// `k3s --version`'s version, e.g. `v1.36.3+k3s1`.
    pub bin_version: Option<K3sVersion>,
    /// Link name → target (`k3s` for a link install.sh made, `file` for a real file).
    pub links: BTreeMap<String, String>,
    pub server: ServiceFacts,
    pub agent: ServiceFacts,
    pub killall_sha256: Option<String>,
    pub config_sha256: Option<String>,
    pub config_mode: Option<u32>,
    pub dropins: BTreeMap<String, String>,
    /// etcd data exists: this host has been a server of a cluster.
    pub server_db: bool,
    pub server_token: bool,
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

fn sha(v: &str) -> Option<String> {
    (v != "-" && !v.is_empty()).then(|| v.to_string())
}

fn mode(v: &str) -> Option<u32> {
    u32::from_str_radix(v, 8).ok()
}

impl HostFacts {
    /// Parse the output of [`HOST_FACTS_SCRIPT`].
    pub fn parse(out: &str) -> Result<HostFacts, FactsError> {
        let mut f = HostFacts::default();
        let mut ended = false;
        for line in out.lines() {
            let Some((key, value)) = line.split_once('\t') else {
                continue;
            };
            let value = value.trim();
            match key {
                "os.id" => f.os_id = value.into(),
                "os.version" => f.os_version = value.into(),
                "arch" => f.arch = value.into(),
                "hostname" => f.hostname = value.into(),
                "init" => f.init = value.into(),
                "curl" => f.has_curl = value == "yes",
                "bin.present" => f.bin_present = value == "yes",
                "bin.version" => f.bin_version = value.parse().ok(),
                "killall.sha256" => f.killall_sha256 = sha(value),
                "config.sha256" => f.config_sha256 = sha(value),
                "config.mode" => f.config_mode = mode(value),
                "server.db" => f.server_db = value == "yes",
                "server.token" => f.server_token = value == "yes",
                "node.password" => f.node_password = value == "yes",
                "residue" => f.residue = value.split_whitespace().map(String::from).collect(),
                "config.b64" => f.config = b64(value),
                "kubeconfig.b64" => f.kubeconfig = b64(value),
                "end" => ended = true,
                _ => {
                    if let Some(name) = key.strip_prefix("link.") {
                        if value != "-" {
                            f.links.insert(name.into(), value.into());
                        }
                    } else if let Some(name) = key.strip_prefix("dropin.") {
                        f.dropins.insert(name.into(), value.into());
                    } else if let Some(name) = key.strip_prefix("image.") {
                        f.images.insert(name.into(), value.into());
                    } else if let Some(name) = key.strip_prefix("manifest.") {
                        f.manifests.insert(name.into(), value.into());
                    } else if let Some(k) = key.strip_prefix("addons.") {
                        f.addons.parse_line(k, value);
                    } else if let Some((kind, rest)) = key.split_once('.') {
                        let Some((service, field)) = rest.rsplit_once('.') else {
                            continue;
                        };
                        let s = match service {
                            "k3s" => &mut f.server,
                            "k3s-agent" => &mut f.agent,
                            _ => continue,
                        };
                        match (kind, field) {
                            ("unit", "sha256") => s.unit_sha256 = sha(value),
                            ("env", "sha256") => s.env_sha256 = sha(value),
                            ("env", "mode") => s.env_mode = mode(value),
                            ("svc", "active") => s.active = value.into(),
                            ("svc", "enabled") => s.enabled = value.into(),
                            ("svc", "since") => s.since = value.parse().unwrap_or(0),
                            ("uninstall", "sha256") => s.uninstall_sha256 = sha(value),
                            _ => {}
                        }
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

    /// The links install.sh would create that are missing or wrong.
    pub fn missing_links(&self) -> Vec<&'static str> {
        k3s::LINKS
            .iter()
            .copied()
            .filter(|l| self.links.get(*l).map(String::as_str) != Some("k3s"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: &str = "os.id\tdebian\nos.version\t12\narch\tx86_64\nhostname\tworker-1\ninit\tsystemd\ncurl\tyes\n\
bin.present\tno\nbin.version\t-\nlink.kubectl\t-\nlink.crictl\t-\nlink.ctr\t-\n\
unit.k3s.sha256\t-\nenv.k3s.sha256\t-\nenv.k3s.mode\t-\nsvc.k3s.active\tinactive\nsvc.k3s.enabled\t\nsvc.k3s.since\t0\nuninstall.k3s.sha256\t-\n\
unit.k3s-agent.sha256\t-\nenv.k3s-agent.sha256\t-\nenv.k3s-agent.mode\t-\nsvc.k3s-agent.active\tinactive\nsvc.k3s-agent.enabled\t\nsvc.k3s-agent.since\t0\nuninstall.k3s-agent.sha256\t-\n\
killall.sha256\t-\nconfig.sha256\t-\nconfig.mode\t-\nserver.db\tno\nserver.token\tno\nnode.password\tno\nend\tok\n";

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
    }

    #[test]
    fn parses_an_installed_agent() {
        let out = FRESH
            .replace("bin.present\tno", "bin.present\tyes")
            .replace("bin.version\t-", "bin.version\tv1.36.3+k3s1")
            .replace("link.kubectl\t-", "link.kubectl\tk3s")
            .replace("unit.k3s-agent.sha256\t-", "unit.k3s-agent.sha256\tdef")
            .replace("env.k3s-agent.mode\t-", "env.k3s-agent.mode\t600")
            .replace(
                "svc.k3s-agent.active\tinactive",
                "svc.k3s-agent.active\tactive",
            )
            .replace("svc.k3s-agent.since\t0", "svc.k3s-agent.since\t123456")
            .replace(
                "end\tok",
                "dropin.50-join.yaml\tfff\nimage.k3s-airgap-images-amd64.tar.gz\t999\nend\tok",
            );
        let f = HostFacts::parse(&out).unwrap();
        assert_eq!(f.bin_version, "v1.36.3+k3s1".parse().ok());
        assert!(f.bin_present);
        assert_eq!(f.installed_role(), Some(Role::Agent));
        assert!(f.agent.is_active());
        assert_eq!(f.agent.since, 123456);
        assert_eq!(f.agent.env_mode, Some(0o600));
        assert_eq!(f.missing_links(), vec!["crictl", "ctr"]);
        assert_eq!(
            f.dropins.get("50-join.yaml").map(String::as_str),
            Some("fff")
        );
        assert_eq!(f.images.len(), 1);
        assert_eq!(f.config, None);
    }

    #[test]
    fn decodes_file_contents() {
        let out = FRESH.replace(
            "end\tok",
            "config.b64\tdG9rZW46ICJ4Igo=\nkubeconfig.b64\t-\nend\tok",
        );
        let f = HostFacts::parse(&out).unwrap();
        assert_eq!(f.config.as_deref(), Some("token: \"x\"\n"));
        assert_eq!(f.kubeconfig, None);
    }

    #[test]
    fn truncated_output_is_an_error() {
        let cut = &FRESH[..FRESH.len() / 2];
        assert_eq!(HostFacts::parse(cut), Err(FactsError::Truncated));
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
