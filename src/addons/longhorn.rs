//! Longhorn 1.12 (reference/addons.md §3): the HelmChart, the inventory's StorageClasses, and
//! the node prerequisites every node needs before the chart is written (open-iscsi with iscsid
//! running, an NFSv4 client, cryptsetup, device-mapper, the `iscsi_tcp` and `dm_crypt` modules,
//! multipathd out of the way).

use serde::Serialize;

use super::{helmchart, AddonError, AddonKind, ManifestFile, Owner, Stage, PREFIX};
use crate::inventory::Longhorn;
use crate::templates;

pub const REPO: &str = "https://charts.longhorn.io";
pub const NAMESPACE: &str = "longhorn-system";
/// Kernel modules Longhorn's V1 data engine needs (§3.2; longhornctl skips `iscsi_tcp` on apt
/// hosts, but the Longhorn docs require it).
/// `nfs` for RWX volumes: the manager's NFS-client check wants NFSv4 built in or the module
/// loaded (longhorn-manager v1.12.1 `node` conditions, reference/addons.md §3.2 item 4).
pub const MODULES: [&str; 3] = ["iscsi_tcp", "dm_crypt", "nfs"];
/// How long one apt-get call may take (the apt install script lives in src/os.rs).
pub use crate::os::APT_STEP_SECS;
/// (binary Longhorn probes, Debian package that provides it).
pub const PACKAGES: [(&str, &str); 4] = [
    ("iscsiadm", "open-iscsi"),
    ("mount.nfs", "nfs-common"),
    ("cryptsetup", "cryptsetup"),
    ("dmsetup", "dmsetup"),
];

#[derive(Serialize)]
struct ClassCtx {
    name: String,
    default: bool,
    allow_volume_expansion: bool,
    reclaim_policy: &'static str,
    volume_binding_mode: &'static str,
    parameters: Vec<(String, String)>,
}

/// The HelmChart and the StorageClass files.
pub fn files(l: &Longhorn, chart_content: Option<&str>) -> Result<Vec<ManifestFile>, AddonError> {
    let mut ctx = tera::Context::new();
    ctx.insert("default_class", &l.chart_class_is_default());
    ctx.insert("replicas", &l.replicas);
    ctx.insert("data_path", &l.data_path);
    ctx.insert("backup_target", &l.backup_target);
    ctx.insert("backup_secret", &l.backup_target_credential_secret);
    let values = templates::render("addons/longhorn-values.yaml", &ctx)?;
    let chart = helmchart(
        AddonKind::Longhorn,
        REPO,
        &l.version,
        NAMESPACE,
        true,
        &values,
        chart_content,
    )?;
    let mut out = vec![chart];
    if !l.storage_classes.is_empty() {
        let classes: Vec<ClassCtx> = l
            .storage_classes
            .iter()
            .map(|c| {
                let mut params = vec![("numberOfReplicas".to_string(), c.replicas.to_string())];
                if let Some(fs) = &c.fs_type {
                    params.push(("fsType".into(), fs.clone()));
                }
                if let Some(d) = &c.data_locality {
                    params.push(("dataLocality".into(), d.clone()));
                }
                for (k, v) in &c.parameters {
                    if !params.iter().any(|(p, _)| p == k) {
                        params.push((k.clone(), v.clone()));
                    }
                }
                params.sort();
                ClassCtx {
                    name: c.name.clone(),
                    default: c.default,
                    allow_volume_expansion: c.allow_volume_expansion,
                    reclaim_policy: c.reclaim_policy.as_str(),
                    volume_binding_mode: c.volume_binding_mode.as_str(),
                    parameters: params,
                }
            })
            .collect();
        let mut ctx = tera::Context::new();
        ctx.insert("classes", &classes);
        out.push(ManifestFile {
            file: format!("{PREFIX}longhorn-storage.yaml"),
            content: templates::render("addons/longhorn-storage.yaml", &ctx)?,
            mode: 0o600,
            owner: Owner::Addon(AddonKind::Longhorn),
            // The provisioner is only a name: the classes need no CRD.
            stage: Stage::Base,
        });
    }
    if !l.recurring_jobs.is_empty() {
        let jobs: Vec<RecurringCtx> = l
            .recurring_jobs
            .iter()
            .map(|j| RecurringCtx {
                name: &j.name,
                task: &j.task,
                cron: &j.cron,
                retain: j.retain,
                concurrency: j.concurrency,
                groups: &j.groups,
            })
            .collect();
        let mut ctx = tera::Context::new();
        ctx.insert("jobs", &jobs);
        out.push(ManifestFile {
            file: format!("{PREFIX}longhorn-recurring.yaml"),
            content: templates::render("addons/longhorn-recurring.yaml", &ctx)?,
            mode: 0o600,
            owner: Owner::Addon(AddonKind::Longhorn),
            // RecurringJob is a Longhorn CRD.
            stage: Stage::After(vec![AddonKind::Longhorn.chart_name().into()]),
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct RecurringCtx<'a> {
    name: &'a str,
    task: &'a str,
    cron: &'a str,
    retain: u32,
    concurrency: u32,
    groups: &'a [String],
}

/// What the facts script found about Longhorn's prerequisites on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrereqFacts {
    /// Binary → found in PATH (plus /sbin, /usr/sbin).
    pub binaries: std::collections::BTreeMap<String, bool>,
    /// `systemctl is-active` of iscsid.service and iscsid.socket.
    pub iscsid: (String, String),
    /// `systemctl is-active` of multipathd.service and multipathd.socket.
    pub multipathd: (String, String),
    /// Multipath maps in use (dmsetup).
    pub multipath_maps: u32,
    /// Module → `loaded`, `available` (modinfo finds it) or `missing`.
    pub modules: std::collections::BTreeMap<String, String>,
    /// The container manager when the host is a container (`systemd-nspawn`, `docker`, ...).
    pub container: Option<String>,
}

fn pair(v: &str) -> (String, String) {
    let (a, b) = v.split_once('/').unwrap_or((v, ""));
    (a.trim().to_string(), b.trim().to_string())
}

impl PrereqFacts {
    /// One `addons.lh.<key>` line.
    pub fn parse_line(&mut self, key: &str, value: &str) {
        match key {
            "iscsid" => self.iscsid = pair(value),
            "multipathd" => self.multipathd = pair(value),
            "multipath.maps" => self.multipath_maps = value.trim().parse().unwrap_or(0),
            "container" => {
                let v = value.trim();
                self.container = (!v.is_empty() && v != "none").then(|| v.to_string());
            }
            _ => {
                if let Some(b) = key.strip_prefix("bin.") {
                    self.binaries.insert(b.to_string(), value.trim() == "yes");
                } else if let Some(m) = key.strip_prefix("mod.") {
                    self.modules.insert(m.to_string(), value.trim().to_string());
                }
            }
        }
    }

    fn iscsid_running(&self) -> bool {
        self.iscsid.0 == "active" || self.iscsid.1 == "active"
    }

    fn multipathd_running(&self) -> bool {
        self.multipathd.0 == "active" || self.multipathd.1 == "active"
    }
}

/// One thing to change on a node so Longhorn can run there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrereqFix {
    /// apt-get install these packages (Debian/Ubuntu).
    Install(Vec<String>),
    /// Start (and enable) iscsid.
    StartIscsid,
    /// Load these modules now and at boot.
    LoadModules(Vec<String>),
    /// multipathd runs but holds no map: disable it (reference/addons.md §3.2, KB).
    DisableMultipathd,
}

impl std::fmt::Display for PrereqFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrereqFix::Install(p) => write!(f, "longhorn prerequisites: install {}", p.join(" ")),
            PrereqFix::StartIscsid => f.write_str("longhorn prerequisites: start iscsid"),
            PrereqFix::LoadModules(m) => {
                write!(f, "longhorn prerequisites: load kernel modules {}", m.join(" "))
            }
            PrereqFix::DisableMultipathd => f.write_str(
                "longhorn prerequisites: disable multipathd (it would claim Longhorn's iSCSI disks)",
            ),
        }
    }
}

/// What a node needs: fixes to run, warnings to show, or an error when it cannot be fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrereqPlan {
    pub fixes: Vec<PrereqFix>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Decide what `node` (with OS id `os_id`) needs. Pure.
pub fn plan_prereqs(node: &str, os_id: &str, f: &PrereqFacts) -> PrereqPlan {
    let mut p = PrereqPlan::default();
    let apt = crate::os::apt_host(os_id);
    let missing: Vec<(&str, &str)> = PACKAGES
        .iter()
        .copied()
        .filter(|(bin, _)| f.binaries.get(*bin) != Some(&true))
        .collect();
    if !missing.is_empty() {
        if apt {
            p.fixes.push(PrereqFix::Install(
                missing.iter().map(|(_, pkg)| pkg.to_string()).collect(),
            ));
        } else {
            for (bin, pkg) in &missing {
                p.errors.push(format!(
                    "{node}: Longhorn needs {bin} (Debian package {pkg}); bootstrap installs packages only with apt on Debian/Ubuntu and this host is {os_id}: install it yourself (RHEL family: iscsi-initiator-utils, nfs-utils, cryptsetup, device-mapper), then re-run"
                ));
            }
        }
    }
    let will_have_iscsiadm = f.binaries.get("iscsiadm") == Some(&true) || apt;
    if !f.iscsid_running() && will_have_iscsiadm {
        match &f.container {
            // iscsid talks to the kernel's iSCSI transport over netlink, which the kernel
            // offers in the host's network namespace only: in a container it exits at once
            // ("can not create NETLINK_ISCSI socket") while `systemctl start` (a forking unit)
            // may still say it started, so a start would report a change that did not happen.
            // Said instead, like a module the container cannot load; once open-iscsi's
            // package has enabled iscsid.socket the facts count iscsid as running and this
            // is said no more.
            Some(c) => p.warnings.push(format!(
                "{node}: iscsid (open-iscsi) is not running and cannot run inside a container ({c}): it needs the kernel's iSCSI netlink, which only the container host's network namespace has; bootstrap does not start it there, and Longhorn volumes will not attach there"
            )),
            None => p.fixes.push(PrereqFix::StartIscsid),
        }
    }
    if f.multipathd_running() {
        if f.multipath_maps == 0 {
            p.fixes.push(PrereqFix::DisableMultipathd);
        } else {
            p.errors.push(format!(
                "{node}: multipathd is running and holds {} multipath map(s), so bootstrap will not disable it; it would claim Longhorn's iSCSI disks: blacklist them in /etc/multipath.conf (see https://longhorn.io/kb/troubleshooting-volume-with-multipath/), restart multipathd and re-run",
                f.multipath_maps
            ));
        }
    }
    let mut load = Vec::new();
    for m in MODULES {
        match f.modules.get(m).map(String::as_str) {
            Some("loaded") => {}
            Some("available") => load.push(m.to_string()),
            _ => match &f.container {
                // The kernel is the container host's: nothing inside can load a module.
                Some(c) => p.warnings.push(format!(
                    "{node}: kernel module {m} is not loaded and cannot be loaded from inside a container ({c}); load it on the container host or Longhorn volumes will not attach there"
                )),
                // Without NFS only RWX volumes and NFS backup targets fail.
                None if m == "nfs" => p.warnings.push(format!(
                    "{node}: this kernel has no NFSv4 client (module nfs: modinfo finds nothing, no nfs4 in /proc/filesystems); Longhorn's RWX volumes and NFS backup targets will not work there"
                )),
                None => p.errors.push(format!(
                    "{node}: kernel module {m} is not loaded and this kernel does not provide it (modinfo {m} finds nothing); install the kernel's extra modules package (e.g. linux-modules-extra-$(uname -r)) and re-run"
                )),
            },
        }
    }
    if !load.is_empty() {
        p.fixes.push(PrereqFix::LoadModules(load));
    }
    p
}

/// The shell script that applies `fix` as root. It prints nothing on success; on failure the
/// last stderr lines say why.
pub fn fix_script(fix: &PrereqFix) -> String {
    match fix {
        PrereqFix::Install(pkgs) => crate::os::apt_install_script(pkgs),
        PrereqFix::StartIscsid => "if systemctl cat iscsid.socket >/dev/null 2>&1; then systemctl enable --now iscsid.socket; fi; systemctl enable iscsid.service >/dev/null 2>&1 || true; systemctl start iscsid.service".into(),
        PrereqFix::LoadModules(mods) => {
            let mods = mods.join(" ");
            format!(
                "set -e; for m in {mods}; do modprobe $m; done; mkdir -p /etc/modules-load.d; \
                 for m in {mods}; do grep -qx \"$m\" /etc/modules-load.d/longhorn.conf 2>/dev/null || echo \"$m\" >> /etc/modules-load.d/longhorn.conf; done"
            )
        }
        PrereqFix::DisableMultipathd => {
            "systemctl disable --now multipathd.socket >/dev/null 2>&1 || true; systemctl disable --now multipathd.service".into()
        }
    }
}

/// A fix that failed, as the operator should read it.
pub fn fix_error(node: &str, fix: &PrereqFix, stderr_tail: &str) -> String {
    let what = match fix {
        PrereqFix::Install(p) => format!(
            "apt-get could not install {} (Longhorn prerequisites); install them by hand (`apt-get install {}`) or make a package mirror reachable, then re-run",
            p.join(", "),
            p.join(" ")
        ),
        PrereqFix::StartIscsid => "iscsid (open-iscsi) did not start".into(),
        PrereqFix::LoadModules(m) => format!("could not load kernel module(s) {}", m.join(", ")),
        PrereqFix::DisableMultipathd => "could not disable multipathd".into(),
    };
    format!("{node}: {what}; nothing else was changed on this node:\n{stderr_tail}")
}

#[cfg(test)]
mod script_tests {
    use super::*;

    fn facts(lines: &[(&str, &str)]) -> PrereqFacts {
        let mut f = PrereqFacts::default();
        for (k, v) in lines {
            f.parse_line(k, v);
        }
        f
    }

    /// A fresh Debian node with nothing of Longhorn's, on a kernel whose modules are loaded.
    const FRESH: &[(&str, &str)] = &[
        ("bin.iscsiadm", "no"),
        ("bin.mount.nfs", "no"),
        ("bin.cryptsetup", "no"),
        ("bin.dmsetup", "yes"),
        ("iscsid", "inactive/inactive"),
        ("multipathd", "inactive/inactive"),
        ("multipath.maps", "0"),
        ("mod.iscsi_tcp", "loaded"),
        ("mod.dm_crypt", "loaded"),
        ("mod.nfs", "loaded"),
    ];

    #[test]
    fn iscsid_in_a_container_is_said_not_started() {
        // A VPS: installed, then started.
        let p = plan_prereqs("w1", "debian", &facts(FRESH));
        assert_eq!(
            p.fixes,
            vec![
                PrereqFix::Install(vec![
                    "open-iscsi".into(),
                    "nfs-common".into(),
                    "cryptsetup".into()
                ]),
                PrereqFix::StartIscsid,
            ]
        );
        assert!(p.warnings.is_empty(), "{p:?}");

        // A container: installed, and iscsid said to be impossible there, naming the node and
        // the container; nothing fails.
        let mut in_container = FRESH.to_vec();
        in_container.push(("container", "systemd-nspawn"));
        let p = plan_prereqs("worker-1", "debian", &facts(&in_container));
        assert_eq!(
            p.fixes,
            vec![PrereqFix::Install(vec![
                "open-iscsi".into(),
                "nfs-common".into(),
                "cryptsetup".into()
            ])]
        );
        assert!(p.errors.is_empty(), "{p:?}");
        assert_eq!(p.warnings.len(), 1, "{p:?}");
        let w = &p.warnings[0];
        assert!(w.starts_with("worker-1: iscsid"), "{w}");
        assert!(w.contains("inside a container (systemd-nspawn)"), "{w}");

        // The next run, after apt: open-iscsi's package enabled iscsid.socket, the service
        // could not stay up. Nothing planned, nothing said again about iscsid.
        let mut installed = in_container.clone();
        for (k, v) in installed.iter_mut() {
            if k.starts_with("bin.") {
                *v = "yes";
            }
            if *k == "iscsid" {
                *v = "failed/active";
            }
        }
        let p = plan_prereqs("worker-1", "debian", &facts(&installed));
        assert_eq!(p, PrereqPlan::default());

        // Stopped by hand in a container: said again, never a step that cannot work.
        for (k, v) in installed.iter_mut() {
            if *k == "iscsid" {
                *v = "inactive/inactive";
            }
        }
        let p = plan_prereqs("worker-1", "debian", &facts(&installed));
        assert!(p.fixes.is_empty(), "{p:?}");
        assert_eq!(p.warnings.len(), 1, "{p:?}");
    }

    #[test]
    fn no_fix_writes_through_a_fixed_path_under_tmp() {
        // A fixed /tmp path lets another user of the host plant a symlink there for root to
        // write through; every fix's script uses mktemp or nothing.
        let fixes = [
            PrereqFix::Install(vec!["open-iscsi".into(), "nfs-common".into()]),
            PrereqFix::StartIscsid,
            PrereqFix::LoadModules(vec!["iscsi_tcp".into()]),
            PrereqFix::DisableMultipathd,
        ];
        for f in &fixes {
            let s = fix_script(f);
            assert!(!s.contains("/tmp/") && !s.contains("/var/tmp"), "{s}");
        }
        assert!(fix_script(&fixes[0]).contains("log=$(mktemp)"));
    }
}
