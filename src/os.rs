//! The host's own settings (`[os]`): what the facts script reads about them, what a host
//! needs to match the inventory (pure, tested without a host), and the shell each step runs.
//! Kernel settings go to one sysctl.d file of bootstrap's, which also records each key's value
//! from before, so removing a key sets it back; time sync keeps the host's own client or
//! installs chrony; security updates are unattended-upgrades told to take security updates
//! only and never reboot; swap is left on (k3s runs the kubelet with `fail-swap-on=false`) or
//! turned off now and at boot.

use std::collections::BTreeMap;

use crate::inventory::{Os, Swap, Updates};

/// The sysctl.d file bootstrap writes (read after the distribution's, before `99-`).
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-bootstrap.conf";
const SYSCTL_HEADER: &str = "# Written by bootstrap from [os.sysctl] in the inventory: edit it there. A \"before\" line keeps the value the key had, which removing the key sets back.";
/// apt's configuration for unattended-upgrades (read after Debian's 20auto-upgrades and
/// 50unattended-upgrades, whose origin lists it clears).
pub const APT_CONF: &str = "/etc/apt/apt.conf.d/52bootstrap-unattended-upgrades";
/// The record that swap was turned off by bootstrap (so `swap = "keep"` turns it on again).
pub const SWAP_RECORD: &str = "/var/lib/bootstrap/swap-off";

/// Time sync clients, in the order one is chosen to be enabled.
pub const TIME_CLIENTS: [&str; 5] = [
    "chrony.service",
    "systemd-timesyncd.service",
    "ntpsec.service",
    "ntp.service",
    "openntpd.service",
];
/// The timers that run apt's daily update and unattended-upgrades.
pub const APT_TIMERS: [&str; 2] = ["apt-daily.timer", "apt-daily-upgrade.timer"];
/// Every unit the facts script asks systemd about for `[os]`.
pub fn units() -> Vec<&'static str> {
    TIME_CLIENTS
        .iter()
        .chain(APT_TIMERS.iter())
        .copied()
        .chain(["swap.target"])
        .collect()
}

/// `CAP_SYS_TIME`: systemd starts chrony and systemd-timesyncd only when the host has it
/// (their units' `ConditionCapability=CAP_SYS_TIME`).
const CAP_SYS_TIME_BIT: u32 = 25;

/// A unit as `systemctl show` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, `masked`.
    pub load: String,
    pub active: String,
    /// `enabled`, `disabled`, `masked`, `static`, ...
    pub enabled: String,
}

impl UnitState {
    fn installed(&self) -> bool {
        self.load == "loaded"
    }
}

/// One kernel setting as the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// /proc/sys has no such file: this kernel does not know the key (yet: a module's keys
    /// appear when it loads).
    Missing,
    /// A directory of settings, not one.
    Directory,
    /// Write-only: an action (`vm.drop_caches`), not a setting.
    WriteOnly,
    Value {
        value: String,
        writable: bool,
    },
}

/// What the facts script read about `[os]` on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsFacts {
    /// bootstrap's sysctl.d file, when there is one.
    pub sysctl_file: Option<String>,
    /// The inventory's keys as the kernel has them.
    pub sysctl: BTreeMap<String, Live>,
    /// The inventory's keys in sysctl files read after bootstrap's: (file, key, value).
    pub sysctl_later: Vec<(String, String, String)>,
    pub units: BTreeMap<String, UnitState>,
    /// The bounding set holds CAP_SYS_TIME (`None`: not read).
    pub cap_sys_time: Option<bool>,
    /// The container manager when the host is a container (`/run/systemd/container`).
    pub container: Option<String>,
    pub apt_conf_sha256: Option<String>,
    /// `/usr/bin/unattended-upgrade` is there.
    pub unattended_upgrades: bool,
    /// Active swap areas (`/proc/swaps`).
    pub swaps: u32,
    pub swap_record: bool,
}

/// The `/proc/sys` path of a dotted key (validated by the inventory: words of `[A-Za-z0-9_-]`).
pub fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The facts script's lines for `[os]`: `sysctl` the inventory's keys. Builtins only, apart
/// from one `base64` when bootstrap's sysctl file exists.
pub fn script(sysctl: &[String]) -> String {
    let mut s = format!(
        r#"# [os] (src/os.rs)
if [ -f {SYSCTL_FILE} ]; then p os.sysctl_file.b64 "$(base64 -w0 {SYSCTL_FILE})"; fi
while read -r k v; do if [ "$k" = CapBnd: ]; then p os.capbnd "$v"; fi; done </proc/self/status
c=; if [ -r /run/systemd/container ]; then read -r c </run/systemd/container || true; fi
p os.container "$c"
if [ -x /usr/bin/unattended-upgrade ]; then p os.unattended yes; fi
n=0; while read -r l; do n=$((n+1)); done </proc/swaps; p os.swaps $((n-1))
if [ -e {SWAP_RECORD} ]; then p os.swap_record yes; fi
"#
    );
    // dash's `read` takes a byte at a time, and /proc/sys answers only a read from offset 0:
    // one `grep` reads every value whole.
    let mut paths = Vec::new();
    for k in sysctl {
        let path = proc_path(k);
        s.push_str(&format!(
            "if [ -d {path} ]; then p 'os.sysctl.{k}' dir; elif [ ! -e {path} ]; then p 'os.sysctl.{k}' missing; elif [ ! -r {path} ]; then p 'os.sysctl.{k}' wo; elif [ -w {path} ]; then p 'os.sysctl.{k}' rw; else p 'os.sysctl.{k}' ro; fi\n"
        ));
        paths.push(path);
    }
    if !paths.is_empty() {
        s.push_str(&format!(
            "grep -H '' {} 2>/dev/null | while IFS= read -r l; do p os.sysctl_value \"$l\"; done\n",
            paths.join(" ")
        ));
        // The same keys in files systemd-sysctl reads after bootstrap's (they win at boot).
        let keys: Vec<String> = sysctl.iter().map(|k| k.replace('.', "[./]")).collect();
        s.push_str(&format!(
            "for f in /etc/sysctl.d/*.conf /run/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf /etc/sysctl.conf; do case ${{f##*/}} in 9[1-9]*|sysctl.conf) grep -sHE '^[[:space:]]*-?({})[[:space:]]*=' \"$f\" | while IFS= read -r l; do p os.sysctl_later \"$l\"; done;; esac; done\n",
            keys.join("|")
        ));
    }
    s
}

impl OsFacts {
    /// One `os.*` line (the key without `os.`).
    pub fn parse_line(&mut self, key: &str, value: &str) {
        match key {
            "sysctl_file.b64" => {
                use base64::Engine;
                self.sysctl_file = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
            }
            "capbnd" => {
                self.cap_sys_time = u64::from_str_radix(value.trim(), 16)
                    .ok()
                    .map(|m| m & (1 << CAP_SYS_TIME_BIT) != 0)
            }
            "container" => {
                let v = value.trim();
                self.container = (!v.is_empty() && v != "none").then(|| v.to_string());
            }
            "unattended" => self.unattended_upgrades = value.trim() == "yes",
            "swaps" => self.swaps = value.trim().parse().unwrap_or(0),
            "swap_record" => self.swap_record = value.trim() == "yes",
            _ => {
                if let Some(k) = key.strip_prefix("sysctl.") {
                    let live = match value.trim() {
                        w @ ("rw" | "ro") => Live::Value {
                            value: String::new(),
                            writable: w == "rw",
                        },
                        "dir" => Live::Directory,
                        "wo" => Live::WriteOnly,
                        _ => Live::Missing,
                    };
                    self.sysctl.insert(k.to_string(), live);
                } else if key == "sysctl_later" {
                    // `/etc/sysctl.conf:vm.max_map_count = 65530` (grep -H).
                    if let Some((file, line)) = value.split_once(':') {
                        if let Some((k, v)) = line.split_once('=') {
                            let k = k.trim().trim_start_matches('-').replace('/', ".");
                            self.sysctl_later
                                .push((file.to_string(), k, v.trim().to_string()));
                        }
                    }
                } else if key == "sysctl_value" {
                    // `/proc/sys/vm/max_map_count:65530` (grep -H).
                    let Some((path, v)) = value.split_once(':') else {
                        return;
                    };
                    let Some(k) = path.strip_prefix("/proc/sys/") else {
                        return;
                    };
                    if let Some(Live::Value { value, .. }) =
                        self.sysctl.get_mut(&k.replace('/', "."))
                    {
                        value.push_str(v);
                    }
                }
            }
        }
    }

    /// One `systemctl show` property of `unit`, when it is one of [`units`].
    pub fn unit_property(&mut self, unit: &str, prop: &str, value: &str) -> bool {
        if !units().contains(&unit) {
            return false;
        }
        let u = self.units.entry(unit.to_string()).or_default();
        match prop {
            "LoadState" => u.load = value.to_string(),
            "ActiveState" => u.active = value.to_string(),
            "UnitFileState" => u.enabled = value.to_string(),
            _ => {}
        }
        true
    }

    fn unit(&self, name: &str) -> UnitState {
        self.units.get(name).cloned().unwrap_or_default()
    }
}

/// bootstrap's sysctl file as written: key → (value, value before bootstrap set it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysctlFile {
    pub values: BTreeMap<String, String>,
    pub before: BTreeMap<String, String>,
}

impl SysctlFile {
    pub fn parse(text: &str) -> SysctlFile {
        let mut f = SysctlFile::default();
        for line in text.lines() {
            let line = line.trim();
            // Only keys that name a setting reach a script; a hand-edited line that does not
            // is left out.
            if let Some(rest) = line.strip_prefix("# before ") {
                if let Some((k, v)) = rest.split_once('=') {
                    if key_ok(k.trim()) {
                        f.before.insert(k.trim().into(), v.trim().into());
                    }
                }
            } else if !line.starts_with('#') {
                if let Some((k, v)) = line.split_once('=') {
                    if key_ok(k.trim()) {
                        f.values.insert(k.trim().into(), v.trim().into());
                    }
                }
            }
        }
        f
    }

    pub fn render(&self) -> String {
        let mut s = format!("{SYSCTL_HEADER}\n");
        for (k, v) in &self.values {
            if let Some(b) = self.before.get(k) {
                s.push_str(&format!("# before {k} = {b}\n"));
            }
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }
}

/// A key as the inventory accepts it (src/inventory/os.rs): dotted words of `[A-Za-z0-9_-]`.
fn key_ok(k: &str) -> bool {
    k.split('.').count() >= 2
        && k.split('.').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Keys of kernel modules k3s loads when it starts (br_netfilter, nf_conntrack): on a host
/// that never ran k3s they are not there yet.
fn module_key(k: &str) -> bool {
    k.starts_with("net.netfilter.") || k.starts_with("net.bridge.")
}

/// Values compare as the kernel prints them: words separated by any blanks.
fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// One change to a host's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsStep {
    /// Set these kernel settings now (the file holds them for the next boot).
    SetSysctl(Vec<(String, String)>),
    /// Put back these keys' values from before bootstrap set them (their keys left the
    /// inventory), where the kernel lets it.
    RestoreSysctl(Vec<(String, String)>),
    /// apt-get install these packages.
    Install(Vec<String>),
    /// Enable (and start) this unit.
    Enable(String),
    /// Remove a file bootstrap wrote.
    RemoveFile(String),
    /// swapoff -a, swap.target masked, the record written.
    SwapOff,
    /// swap.target unmasked, swapon -a, the record removed.
    SwapOn,
    /// Wait (bounded) until the host's clock is within `bound_secs` of this machine's: the
    /// time sync client just started steps it (chrony's `makestep`, timesyncd's first sync).
    WaitClock { bound_secs: u32 },
}

impl std::fmt::Display for OsStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs = |p: &[(String, String)]| {
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            OsStep::SetSysctl(p) => write!(f, "os: set {}", pairs(p)),
            OsStep::RestoreSysctl(p) => write!(f, "os: set back {}", pairs(p)),
            OsStep::Install(p) => write!(f, "os: install {}", p.join(" ")),
            OsStep::Enable(u) => write!(f, "os: enable and start {u}"),
            OsStep::RemoveFile(p) => write!(f, "os: remove {p}"),
            OsStep::SwapOff => {
                f.write_str("os: turn swap off now and at boot (swapoff -a, mask swap.target)")
            }
            OsStep::SwapOn => f.write_str("os: let swap on again (unmask swap.target, swapon -a)"),
            OsStep::WaitClock { bound_secs } => write!(
                f,
                "os: wait until its clock is within {bound_secs} s of this machine's"
            ),
        }
    }
}

/// Sets each key; with `check`, reads it back and fails, naming the key, when the kernel
/// keeps another value (it normalised the one given, `0x10` → `16`, or could not take it all,
/// `vm.nr_hugepages`): written as the kernel prints it, the next run has nothing to do.
fn write_proc(pairs: &[(String, String)], check: bool) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let p = crate::ssh::sh_quote(&proc_path(k));
            let v = crate::ssh::sh_quote(v);
            if check {
                format!(
                    "printf '%s\\n' {v} >{p} || {{ echo \"cannot set {k}\" >&2; exit 1; }}\n\
                     got=$(tr -s ' \\t' '  ' <{p}); want=$(printf '%s' {v} | tr -s ' \\t' '  ')\n\
                     [ \"$got\" = \"$want\" ] || {{ echo \"{k}: the kernel keeps $got for $want; write it in the inventory as the kernel prints it\" >&2; exit 1; }}"
                )
            } else {
                format!("if [ -w {p} ]; then printf '%s\\n' {v} >{p}; fi")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shell that applies `step` as root; on failure its last stderr lines say why.
pub fn step_script(step: &OsStep) -> String {
    match step {
        OsStep::SetSysctl(p) => write_proc(p, true),
        OsStep::RestoreSysctl(p) => write_proc(p, false),
        OsStep::Install(pkgs) => apt_install_script(pkgs),
        OsStep::Enable(u) => format!(
            "systemctl enable --now {} >/dev/null 2>&1 || systemctl enable --now {}",
            crate::ssh::sh_quote(u),
            crate::ssh::sh_quote(u)
        ),
        OsStep::RemoveFile(p) => format!("rm -f {}", crate::ssh::sh_quote(p)),
        OsStep::SwapOff => format!(
            "set -e; if [ ! -e /run/systemd/container ]; then swapoff -a; fi; systemctl mask swap.target >/dev/null; mkdir -p {d}; : >{SWAP_RECORD}",
            d = SWAP_RECORD.rsplit_once('/').map(|(d, _)| d).unwrap_or("/")
        ),
        // Run by the executor itself: it compares with this machine's clock.
        OsStep::WaitClock { .. } => "date +%s.%N".into(),
        OsStep::SwapOn => format!(
            "set -e; systemctl unmask swap.target >/dev/null; if [ ! -e /run/systemd/container ]; then swapon -a; fi; rm -f {SWAP_RECORD}"
        ),
    }
}

/// apt's configuration for security updates only, no automatic reboot. `#clear` empties the
/// origin lists Debian's 50unattended-upgrades (and Ubuntu's) fill (apt.conf(5)).
pub fn apt_conf() -> String {
    r#"// Written by bootstrap ([os] updates = "security"): security updates only, never a reboot
// (/var/run/reboot-required says when one is due: reboot at a time you choose).
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
#clear Unattended-Upgrade::Origins-Pattern;
#clear Unattended-Upgrade::Allowed-Origins;
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
        "origin=Debian,codename=${distro_codename},label=Debian-Security";
        "origin=Ubuntu,archive=${distro_codename}-security";
};
Unattended-Upgrade::Automatic-Reboot "false";
"#
    .to_string()
}

/// Whether these steps start a time sync client.
pub fn starts_time_sync(steps: &[OsStep]) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, OsStep::Enable(u) if TIME_CLIENTS.contains(&u.as_str())))
}

/// What one host needs: files to write (path, content), steps after them, warnings, errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsPlan {
    /// Written (0644) before the steps.
    pub files: Vec<(String, String)>,
    pub steps: Vec<OsStep>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// The longest one apt-get call of the package fix may take: three calls at most, so a host
/// whose package manager cannot reach a mirror fails in under five minutes.
pub const APT_STEP_SECS: u32 = 90;

/// The shell that installs `pkgs` with apt-get as root; on failure apt's last lines on stderr.
pub fn apt_install_script(pkgs: &[String]) -> String {
    let pkgs = pkgs.join(" ");
    // Try with the current lists first (no network round trip when they are fresh),
    // then refresh them once. Each apt-get call is bounded ([`APT_STEP_SECS`]): with no
    // reachable mirror apt retries connections for many minutes otherwise.
    // The log goes to a fresh mktemp file: a fixed path under /tmp is one another
    // user of the host could point elsewhere with a symlink, for root to overwrite.
    // DPkg::Lock::Timeout: unattended-upgrades (which `updates = "security"` turns on) may hold
    // dpkg's lock for a while; apt waits for it instead of failing at once.
    format!(
        "export DEBIAN_FRONTEND=noninteractive; opts='-y -q --no-install-recommends -o Acquire::Retries=1 -o Acquire::http::Timeout=20 -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=60'; \
         log=$(mktemp) || exit 1; t='timeout -k 5 {APT_STEP_SECS}'; \
         run() {{ $t \"$@\" >>\"$log\" 2>&1; rc=$?; [ $rc -eq 124 ] && echo \"$1 $2: no answer within {APT_STEP_SECS}s (is a package mirror reachable from this host?)\" >>\"$log\"; return $rc; }}; \
         run apt-get install $opts {pkgs} || {{ run apt-get update -q -o Acquire::Retries=1 -o Acquire::http::Timeout=20; run apt-get install $opts {pkgs}; }} || {{ tail -n 15 \"$log\" >&2; rm -f \"$log\"; exit 1; }}; rm -f \"$log\""
    )
}

/// Whether bootstrap installs packages on a host of this `ID` (apt).
pub fn apt_host(os_id: &str) -> bool {
    matches!(
        os_id,
        "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop"
    )
}

/// Decide what `node` needs for `os` (`None`: `[os]` is not in the inventory, and what an
/// earlier run set is undone). Pure.
pub fn plan_host(node: &str, os_id: &str, os: Option<&Os>, f: &OsFacts) -> OsPlan {
    let mut p = OsPlan::default();
    let default = Os::default();
    let want = os.unwrap_or(&default);
    sysctl(node, want, f, &mut p);
    if want.time_sync {
        time_sync(node, os_id, f, &mut p);
    }
    updates(node, os_id, want.updates, f, &mut p);
    swap(node, want.swap, f, &mut p);
    p
}

fn sysctl(node: &str, want: &Os, f: &OsFacts, p: &mut OsPlan) {
    let current = f.sysctl_file.as_deref().map(SysctlFile::parse);
    if want.sysctl.is_empty() {
        if let Some(cur) = current {
            p.steps.push(OsStep::RemoveFile(SYSCTL_FILE.into()));
            let back: Vec<_> = cur.before.into_iter().collect();
            if !back.is_empty() {
                p.steps.push(OsStep::RestoreSysctl(back));
            }
        }
        return;
    }
    let cur = current.clone().unwrap_or_default();
    let mut file = SysctlFile::default();
    let mut set = Vec::new();
    for (k, v) in &want.sysctl {
        match f.sysctl.get(k) {
            // Not read (the facts of an older run's request): nothing to compare.
            None => {
                file.values.insert(k.clone(), v.clone());
            }
            Some(Live::Missing) if module_key(k) => {
                file.values.insert(k.clone(), v.clone());
                p.warnings.push(format!(
                    "{node}: os.sysctl \"{k}\" is not there until its kernel module loads (k3s loads br_netfilter and nf_conntrack when it starts): written to {SYSCTL_FILE}; the next run sets it"
                ));
            }
            Some(Live::Missing) => p.errors.push(format!(
                "{node}: os.sysctl \"{k}\": this host's kernel has no such setting ({} does not exist)",
                proc_path(k)
            )),
            Some(Live::Directory) => p.errors.push(format!(
                "{node}: os.sysctl \"{k}\" is a directory of settings ({}), not one: name a key inside it",
                proc_path(k)
            )),
            Some(Live::WriteOnly) => p.errors.push(format!(
                "{node}: os.sysctl \"{k}\" is write-only, an action and not a setting: it would run on every `up`; remove it"
            )),
            Some(Live::Value { value, writable }) => {
                // The value the key had before bootstrap first set it, kept for as long as
                // the key is bootstrap's.
                let before = cur
                    .before
                    .get(k)
                    .cloned()
                    .or_else(|| (!cur.values.contains_key(k)).then(|| value.clone()));
                if let Some(b) = before {
                    file.before.insert(k.clone(), b);
                }
                file.values.insert(k.clone(), v.clone());
                for (later, _, lv) in f.sysctl_later.iter().filter(|(_, lk, _)| lk == k) {
                    if !same_value(lv, v) {
                        p.warnings.push(format!(
                            "{node}: os.sysctl \"{k}\": {later} sets it to {lv} and is read after {SYSCTL_FILE} at boot, so after a reboot it is {lv} until the next `up`; remove it there"
                        ));
                    }
                }
                if !same_value(value, v) {
                    if *writable {
                        set.push((k.clone(), v.clone()));
                    } else {
                        let why = match &f.container {
                            Some(c) => format!("/proc/sys is read-only inside this container ({c}): set it on the container host"),
                            None => "the kernel refuses to change it on this host".into(),
                        };
                        p.warnings.push(format!(
                            "{node}: os.sysctl \"{k}\" is {value}, not {v}: written to {SYSCTL_FILE} for the next boot, but {why}"
                        ));
                    }
                }
            }
        }
    }
    let back: Vec<(String, String)> = cur
        .before
        .iter()
        .filter(|(k, _)| !want.sysctl.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let text = file.render();
    if f.sysctl_file.as_deref() != Some(text.as_str()) {
        p.files.push((SYSCTL_FILE.into(), text));
    }
    if !set.is_empty() {
        p.steps.push(OsStep::SetSysctl(set));
    }
    if !back.is_empty() {
        p.steps.push(OsStep::RestoreSysctl(back));
    }
}

fn time_sync(node: &str, os_id: &str, f: &OsFacts, p: &mut OsPlan) {
    let states: Vec<(&str, UnitState)> = TIME_CLIENTS.iter().map(|u| (*u, f.unit(u))).collect();
    if states.iter().any(|(_, s)| s.active == "active") {
        return;
    }
    let installed: Vec<&(&str, UnitState)> = states.iter().filter(|(_, s)| s.installed()).collect();
    // Units systemd will not start here: chrony and timesyncd need CAP_SYS_TIME
    // (ConditionCapability), timesyncd also refuses any container (ConditionVirtualization).
    let no_cap = f.cap_sys_time == Some(false);
    let wont_start =
        |u: &str| no_cap || (u == "systemd-timesyncd.service" && f.container.is_some());
    let skipped = |u: &str| {
        format!(
            "{node}: time sync: {u} is enabled, but systemd does not start it here: this host may not set the clock ({}), so whoever runs it keeps its time",
            match (&f.container, no_cap) {
                (Some(c), true) => format!("no CAP_SYS_TIME, a {c} container"),
                (None, _) => "no CAP_SYS_TIME".to_string(),
                (Some(c), false) => format!("a {c} container"),
            }
        )
    };
    match installed.first() {
        Some((u, s)) if wont_start(u) && s.enabled == "enabled" => p.warnings.push(skipped(u)),
        Some((u, _)) => {
            p.steps.push(OsStep::Enable(u.to_string()));
            if wont_start(u) {
                p.warnings.push(skipped(u));
            }
        }
        None if states.iter().any(|(_, s)| s.load == "masked") => p.errors.push(format!(
            "{node}: time sync: every time sync client here is masked ({}); unmask one, or set os.time_sync = false",
            states
                .iter()
                .filter(|(_, s)| s.load == "masked")
                .map(|(u, _)| *u)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None if apt_host(os_id) => {
            p.steps.push(OsStep::Install(vec!["chrony".into()]));
            p.steps.push(OsStep::Enable("chrony.service".into()));
            if no_cap {
                p.warnings.push(skipped("chrony.service"));
            }
        }
        None => p.errors.push(format!(
            "{node}: time sync: no time sync client is installed and bootstrap installs packages only with apt on Debian/Ubuntu (this host is {os_id}): install chrony, then re-run"
        )),
    }
}

fn updates(node: &str, os_id: &str, want: Updates, f: &OsFacts, p: &mut OsPlan) {
    match want {
        Updates::Keep => {
            if f.apt_conf_sha256.is_some() {
                p.steps.push(OsStep::RemoveFile(APT_CONF.into()));
            }
        }
        // The origin patterns name Debian's and Ubuntu's security archives: on another apt
        // distribution they would match nothing and nothing would ever be updated.
        Updates::Security if !matches!(os_id, "debian" | "ubuntu") => p.errors.push(format!(
            "{node}: os.updates = \"security\" sets up unattended-upgrades for Debian's and Ubuntu's security archives only, and this host is {os_id}: set up its updates yourself and leave updates = \"keep\""
        )),
        Updates::Security => {
            if !f.unattended_upgrades {
                p.steps
                    .push(OsStep::Install(vec!["unattended-upgrades".into()]));
            }
            let conf = apt_conf();
            if f.apt_conf_sha256.as_deref() != Some(crate::k3s::sha256_hex(conf.as_bytes()).as_str()) {
                p.files.push((APT_CONF.into(), conf));
            }
            for t in APT_TIMERS {
                match f.unit(t).enabled.as_str() {
                    "masked" | "masked-runtime" => p.warnings.push(format!(
                        "{node}: {t} is masked, so unattended-upgrades never runs here: unmask it (`systemctl unmask {t}`) to get security updates"
                    )),
                    "disabled" => p.steps.push(OsStep::Enable(t.into())),
                    _ => {}
                }
            }
        }
    }
}

fn swap(node: &str, want: Swap, f: &OsFacts, p: &mut OsPlan) {
    match want {
        Swap::Off => {
            if let (Some(c), true) = (&f.container, f.swaps > 0) {
                p.warnings.push(format!(
                    "{node}: os.swap = \"off\": the swap here is the container host's ({c}): turn it off there"
                ));
            }
            if !f.swap_record
                || f.unit("swap.target").enabled != "masked"
                || (f.swaps > 0 && f.container.is_none())
            {
                p.steps.push(OsStep::SwapOff);
            }
        }
        Swap::Keep => {
            if f.swap_record {
                p.steps.push(OsStep::SwapOn);
            }
        }
    }
}

#[cfg(test)]
mod tests;
