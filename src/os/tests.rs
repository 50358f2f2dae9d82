use super::*;
use crate::inventory::{Os, Swap, Updates};

fn live(v: &str, writable: bool) -> Live {
    Live::Value {
        value: v.into(),
        writable,
    }
}

fn os_with(sysctl: &[(&str, &str)]) -> Os {
    Os {
        sysctl: sysctl
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Os::default()
    }
}

/// Facts parsed from the lines the facts script prints, as a host printed them.
fn facts(lines: &str) -> OsFacts {
    let mut f = OsFacts::default();
    for l in lines.lines() {
        let (k, v) = l.split_once('\t').unwrap();
        f.parse_line(k.strip_prefix("os.").unwrap(), v);
    }
    f
}

#[test]
fn the_script_lines_parse() {
    let f = facts(
        "os.capbnd\t000001fdfdffffff\nos.container\tsystemd-nspawn\nos.unattended\tyes\nos.swaps\t0\nos.sysctl.vm.max_map_count\tro\nos.sysctl.net.ipv4.ip_local_port_range\trw\nos.sysctl.fs.nope\tmissing\nos.sysctl_value\t/proc/sys/vm/max_map_count:65530\nos.sysctl_value\t/proc/sys/net/ipv4/ip_local_port_range:32768\t60999\n",
    );
    // nspawn's bounding set (CAP_SYS_TIME, bit 25, not in it).
    assert_eq!(f.cap_sys_time, Some(false));
    assert_eq!(f.container.as_deref(), Some("systemd-nspawn"));
    assert!(f.unattended_upgrades);
    assert_eq!(f.sysctl["vm.max_map_count"], live("65530", false));
    assert_eq!(
        f.sysctl["net.ipv4.ip_local_port_range"],
        live("32768\t60999", true)
    );
    assert_eq!(f.sysctl["fs.nope"], Live::Missing);
    // A full bounding set (a VM's root) has it.
    assert_eq!(
        facts("os.capbnd\t000001ffffffffff\n").cap_sys_time,
        Some(true)
    );
}

#[test]
fn sysctl_written_set_and_idempotent() {
    let want = os_with(&[
        ("vm.max_map_count", "262144"),
        ("net.core.somaxconn", "4096"),
    ]);
    let mut f = OsFacts::default();
    f.sysctl
        .insert("vm.max_map_count".into(), live("65530", true));
    f.sysctl
        .insert("net.core.somaxconn".into(), live("4096", true));
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert!(p.errors.is_empty() && p.warnings.is_empty(), "{p:?}");
    let (path, text) = &p.files[0];
    assert_eq!(path, SYSCTL_FILE);
    // Only the key that differs is set; its value from before is kept in the file.
    assert_eq!(
        p.steps,
        vec![OsStep::SetSysctl(vec![(
            "vm.max_map_count".into(),
            "262144".into()
        )])]
    );
    assert!(text.contains("# before vm.max_map_count = 65530\nvm.max_map_count = 262144\n"));
    // A key already at its value keeps that value as its "before" too.
    assert!(
        text.contains("# before net.core.somaxconn = 4096\n"),
        "{text}"
    );

    // After the run: the file is there and the value live: nothing to do.
    f.sysctl_file = Some(text.clone());
    f.sysctl
        .insert("vm.max_map_count".into(), live("262144", true));
    let again = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(again, OsPlan::default());

    // A key leaves the inventory: the file loses it and its value from before comes back.
    let fewer = os_with(&[("net.core.somaxconn", "4096")]);
    let p = plan_host("n1", "debian", Some(&fewer), &f);
    assert_eq!(
        p.steps,
        vec![OsStep::RestoreSysctl(vec![(
            "vm.max_map_count".into(),
            "65530".into()
        )])]
    );
    assert!(!p.files[0].1.contains("vm.max_map_count"));

    // [os] goes: the file goes and every value from before comes back.
    let p = plan_host("n1", "debian", None, &f);
    assert_eq!(
        p.steps,
        vec![
            OsStep::RemoveFile(SYSCTL_FILE.into()),
            OsStep::RestoreSysctl(vec![
                ("net.core.somaxconn".into(), "4096".into()),
                ("vm.max_map_count".into(), "65530".into())
            ])
        ]
    );
}

#[test]
fn sysctl_refused_only_where_the_host_has_no_such_key_and_read_only_is_said() {
    let want = os_with(&[("vm.max_map_count", "262144"), ("net.nope.x", "1")]);
    let mut f = OsFacts {
        container: Some("systemd-nspawn".into()),
        ..OsFacts::default()
    };
    f.sysctl
        .insert("vm.max_map_count".into(), live("65530", false));
    f.sysctl.insert("net.nope.x".into(), Live::Missing);
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(p.errors.len(), 1, "{p:?}");
    assert!(
        p.errors[0].contains("n1: os.sysctl \"net.nope.x\": this host's kernel has no such setting (/proc/sys/net/nope/x does not exist)"),
        "{}",
        p.errors[0]
    );
    assert!(
        p.warnings[0].contains("read-only inside this container (systemd-nspawn)"),
        "{:?}",
        p.warnings
    );
    assert!(p.steps.is_empty(), "{p:?}");
    // The file still holds it, for a host where it applies at boot.
    assert!(p.files[0].1.contains("vm.max_map_count = 262144"));
}

#[test]
fn sysctl_file_round_trips() {
    let mut f = SysctlFile::default();
    f.values.insert("a.b".into(), "1 2".into());
    f.before.insert("a.b".into(), "3\t4".into());
    let text = f.render();
    assert_eq!(SysctlFile::parse(&text), f);
}

fn unit(load: &str, active: &str, enabled: &str) -> UnitState {
    UnitState {
        load: load.into(),
        active: active.into(),
        enabled: enabled.into(),
    }
}

#[test]
fn time_sync_keeps_the_hosts_client_or_installs_chrony() {
    let want = Os {
        time_sync: true,
        ..Os::default()
    };
    let mut f = OsFacts {
        cap_sys_time: Some(true),
        ..OsFacts::default()
    };
    // Nothing installed: chrony.
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(
        p.steps,
        vec![
            OsStep::Install(vec!["chrony".into()]),
            OsStep::Enable("chrony.service".into())
        ]
    );
    // timesyncd installed but off: enabled, nothing installed.
    f.units.insert(
        "systemd-timesyncd.service".into(),
        unit("loaded", "inactive", "disabled"),
    );
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(
        p.steps,
        vec![OsStep::Enable("systemd-timesyncd.service".into())]
    );
    // Running: nothing.
    f.units.insert(
        "systemd-timesyncd.service".into(),
        unit("loaded", "active", "enabled"),
    );
    assert_eq!(
        plan_host("n1", "debian", Some(&want), &f),
        OsPlan::default()
    );
    // Not on apt: named.
    let p = plan_host("n1", "alpine", Some(&want), &OsFacts::default());
    assert!(p.errors[0].contains("install chrony"), "{p:?}");
}

#[test]
fn time_sync_in_a_container_is_enabled_once_then_said() {
    let want = Os {
        time_sync: true,
        ..Os::default()
    };
    let mut f = OsFacts {
        cap_sys_time: Some(false),
        container: Some("systemd-nspawn".into()),
        ..OsFacts::default()
    };
    f.units.insert(
        "chrony.service".into(),
        unit("loaded", "inactive", "disabled"),
    );
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(p.steps, vec![OsStep::Enable("chrony.service".into())]);
    // Enabled, skipped by systemd: a warning, no step on every run.
    f.units.insert(
        "chrony.service".into(),
        unit("loaded", "inactive", "enabled"),
    );
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert!(p.steps.is_empty(), "{p:?}");
    assert!(
        p.warnings[0].contains("no CAP_SYS_TIME, a systemd-nspawn container"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn security_updates_installed_configured_and_removed() {
    let want = Os {
        updates: Updates::Security,
        ..Os::default()
    };
    let mut f = OsFacts::default();
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert_eq!(
        p.steps,
        vec![OsStep::Install(vec!["unattended-upgrades".into()])]
    );
    assert_eq!(p.files, vec![(APT_CONF.to_string(), apt_conf())]);
    f.unattended_upgrades = true;
    f.apt_conf_sha256 = Some(crate::k3s::sha256_hex(apt_conf().as_bytes()));
    f.units.insert(
        "apt-daily.timer".into(),
        unit("loaded", "active", "enabled"),
    );
    f.units.insert(
        "apt-daily-upgrade.timer".into(),
        unit("masked", "inactive", "masked"),
    );
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert!(p.steps.is_empty() && p.files.is_empty(), "{p:?}");
    assert!(p.warnings[0].contains("apt-daily-upgrade.timer is masked"));
    // Security only, never a reboot.
    let conf = apt_conf();
    assert!(conf.contains("#clear Unattended-Upgrade::Origins-Pattern;"));
    assert!(conf.contains("Unattended-Upgrade::Automatic-Reboot \"false\";"));
    assert!(!conf.contains("label=Debian\""), "{conf}");
    // updates = "keep" (or no [os]): the file goes, the package stays.
    let p = plan_host("n1", "debian", None, &f);
    assert_eq!(p.steps, vec![OsStep::RemoveFile(APT_CONF.into())]);
}

#[test]
fn swap_off_and_back() {
    let want = Os {
        swap: Swap::Off,
        ..Os::default()
    };
    let mut f = OsFacts {
        swaps: 1,
        ..OsFacts::default()
    };
    assert_eq!(
        plan_host("n1", "debian", Some(&want), &f).steps,
        vec![OsStep::SwapOff]
    );
    f.swaps = 0;
    f.swap_record = true;
    f.units
        .insert("swap.target".into(), unit("masked", "inactive", "masked"));
    assert_eq!(
        plan_host("n1", "debian", Some(&want), &f),
        OsPlan::default()
    );
    assert_eq!(
        plan_host("n1", "debian", None, &f).steps,
        vec![OsStep::SwapOn]
    );
    // In a container the swap is the host's: said, not fought over on every run.
    f.swaps = 2;
    f.container = Some("systemd-nspawn".into());
    let p = plan_host("n1", "debian", Some(&want), &f);
    assert!(p.steps.is_empty(), "{p:?}");
    assert!(p.warnings[0].contains("container host's"));
}

#[test]
fn step_scripts_quote_values() {
    let s = step_script(&OsStep::SetSysctl(vec![(
        "net.ipv4.ip_local_port_range".into(),
        "1024 65000".into(),
    )]));
    assert!(
        s.contains("printf '%s\\n' '1024 65000' >/proc/sys/net/ipv4/ip_local_port_range"),
        "{s}"
    );
    // Read back: a value the kernel normalises fails the step, naming the key.
    assert!(s.contains("the kernel keeps $got for $want"), "{s}");
}

/// The set-and-read-back script, run here with files standing in for /proc/sys: what is
/// written goes to one, what the "kernel" keeps is read from the other.
#[test]
fn a_value_the_kernel_keeps_otherwise_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = (dir.path().join("written"), dir.path().join("kept"));
    let run = |v: &str, kept: &str| {
        std::fs::write(&r, kept).unwrap();
        let s = step_script(&OsStep::SetSysctl(vec![("vm.swappiness".into(), v.into())]))
            .replace(">/proc/sys/vm/swappiness", &format!(">{}", w.display()))
            .replace("</proc/sys/vm/swappiness", &format!("<{}", r.display()));
        // Never this machine's own settings.
        assert!(!s.contains("/proc/sys"), "{s}");
        std::process::Command::new("sh")
            .args(["-c", &s])
            .output()
            .unwrap()
    };
    // Kept as given, blanks aside.
    let ok = run("1024 65000", "1024\t65000\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(std::fs::read_to_string(&w).unwrap(), "1024 65000\n");
    // What a kernel does with 0x10: keeps 16.
    let bad = run("0x10", "16\n");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("vm.swappiness: the kernel keeps 16 for 0x10"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn before_values_survive_empty_values_and_changes_back_and_forth() {
    let mut f = OsFacts::default();
    f.sysctl
        .insert("net.ipv4.ip_local_reserved_ports".into(), live("", true));
    f.sysctl
        .insert("vm.max_map_count".into(), live("65530", true));
    let mut want = os_with(&[
        ("net.ipv4.ip_local_reserved_ports", "30000-32767"),
        ("vm.max_map_count", "262144"),
    ]);
    let step = |want: &Os, f: &mut OsFacts| {
        let p = plan_host("n1", "debian", Some(want), f);
        if let Some((_, text)) = p.files.first() {
            f.sysctl_file = Some(text.clone());
        }
        for (k, v) in &want.sysctl {
            f.sysctl.insert(k.clone(), live(v, true));
        }
        p
    };
    step(&want, &mut f);
    // Back to the kernel's value, then another one: the value from before stays.
    want.sysctl
        .insert("vm.max_map_count".into(), "65530".into());
    step(&want, &mut f);
    want.sysctl
        .insert("vm.max_map_count".into(), "1000000".into());
    step(&want, &mut f);
    assert_eq!(step(&want, &mut f), OsPlan::default());
    let p = plan_host("n1", "debian", None, &f);
    assert_eq!(
        p.steps,
        vec![
            OsStep::RemoveFile(SYSCTL_FILE.into()),
            OsStep::RestoreSysctl(vec![
                ("net.ipv4.ip_local_reserved_ports".into(), "".into()),
                ("vm.max_map_count".into(), "65530".into())
            ])
        ]
    );
}

#[test]
fn keys_that_are_no_setting_are_refused_and_module_keys_wait_for_k3s() {
    let want = os_with(&[
        ("net.ipv4.conf.all", "1"),
        ("vm.drop_caches", "3"),
        ("net.netfilter.nf_conntrack_max", "262144"),
    ]);
    let mut f = OsFacts::default();
    f.sysctl.insert("net.ipv4.conf.all".into(), Live::Directory);
    f.sysctl.insert("vm.drop_caches".into(), Live::WriteOnly);
    f.sysctl
        .insert("net.netfilter.nf_conntrack_max".into(), Live::Missing);
    let p = plan_host("n1", "debian", Some(&want), &f);
    let errors = p.errors.join("\n");
    assert!(
        errors.contains("\"net.ipv4.conf.all\" is a directory"),
        "{errors}"
    );
    assert!(
        errors.contains("\"vm.drop_caches\" is write-only"),
        "{errors}"
    );
    assert_eq!(p.errors.len(), 2, "{errors}");
    assert!(
        p.warnings[0].contains("not there until its kernel module loads"),
        "{:?}",
        p.warnings
    );
    assert!(p.files[0]
        .1
        .contains("net.netfilter.nf_conntrack_max = 262144"));
}

#[test]
fn a_later_sysctl_file_is_named() {
    let f = facts(
        "os.sysctl.vm.max_map_count\trw\nos.sysctl_value\t/proc/sys/vm/max_map_count:262144\nos.sysctl_later\t/etc/sysctl.conf:vm.max_map_count=65530\n",
    );
    let p = plan_host(
        "n1",
        "debian",
        Some(&os_with(&[("vm.max_map_count", "262144")])),
        &f,
    );
    assert!(
        p.warnings[0].contains("/etc/sysctl.conf sets it to 65530 and is read after"),
        "{:?}",
        p.warnings
    );
}
