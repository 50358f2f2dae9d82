//! Broken inventories and the errors they must produce.
//!
//! Each fixture in `tests/fixtures/inventory/` is loaded through the library
//! (`Inventory::load`, which the CLI calls before touching any host). Its error must name the
//! file, the 1-based line and column of the offending value, say what is wrong (a phrase checked
//! here), and carry the right [`ErrorKind`]:
//!
//! | kind | example fixture | what the user sees |
//! |---|---|---|
//! | `Syntax` | `syntax_error.toml` | TOML syntax error at the point the parser gave up |
//! | `UnknownKey` | `unknown_key.toml`, `unknown_addon.toml`, `unknown_traefik_option.toml` | unknown field, the accepted ones, "did you mean" |
//! | `MissingKey` | `missing_host.toml` | which required key the table lacks |
//! | `WrongType` | `wrong_type.toml` | the type found and the type expected |
//! | `InvalidValue` | `bad_role.toml`, `bad_source.toml`, `bad_host_key_policy.toml`, `bad_reclaim_policy.toml`, `removed_flannel_backend.toml`, `unknown_disable.toml` | the allowed values, a case-insensitive or closest match |
//! | `InvalidName` | `node_name_uppercase.toml`, `node_name_too_long.toml`, `bad_cluster_name.toml`, `bad_storage_class_name.toml` | the RFC 1123 rule broken and a corrected name |
//! | `Duplicate` | `duplicate_node_name.toml`, `duplicate_host.toml` | which earlier node already uses it |
//! | `NoServer` | `no_server.toml` | that a server is needed and which node could be one |
//! | `InvalidHost` | `bad_host.toml`, `bad_ipv4_host.toml` | why it is no IP/DNS name (user or port inside, bad IPv4) |
//! | `InvalidPort` | `port_out_of_range.toml` | the accepted range |
//! | `InvalidLabel` | `bad_label_key.toml`, `bad_label_value.toml` | the Kubernetes label syntax |
//! | `RestrictedLabel` | `restricted_label.toml` | the kubelet refuses it; use `api_labels` |
//! | `InvalidTaint` | `bad_taint.toml`, `bad_taint_effect.toml` | `key=value:Effect` / `key:Effect` and the three effects |
//! | `InvalidVersion` | `bad_k3s_version.toml`, `unpinned_chart.toml` | `vMAJOR.MINOR.PATCH+k3sN` and the likely intended version |
//! | `InvalidUrl` | `bad_mirror.toml` | http(s) URL expected |
//! | `InvalidCidr` | `cidr_overlap.toml` | which ranges overlap |
//! | `UnknownFlag` | `unknown_server_flag.toml` | not a k3s flag for that role; closest flag |
//! | `WrongRoleFlag` | `server_flag_in_agent_config.toml` | server-only flag would stop the agent |
//! | `ManagedFlag` | `managed_flag.toml` | bootstrap sets it; what to use instead |
//! | `InvalidEmail` | `bad_acme_email.toml` | not an e-mail address |
//! | `InvalidNumber` | `zero_replicas.toml`, `negative_weight.toml`, `all_zero_weights.toml` | the accepted range |
//! | `InvalidDuration` | `bad_duration.toml` | seconds or `30s`/`5m`/`1h` |
//! | `InvalidPath` | `missing_manifest.toml`, `manifest_directory.toml` | not found / not a file, relative to the inventory |
//! | `UndefinedVariable` | `undefined_variable.toml` | located in the manifest file, the variable to add |
//! | `Conflict` | `two_default_storage_classes.toml`, `tls_issuer_without_cert_manager.toml`, `chart_cycle.toml` | which settings clash; a cycle names every place in it |
//!
//! `multiple_errors.toml` checks that every problem is reported, one line each, in file order.

use std::path::{Path, PathBuf};

use bootstrap::inventory::{ErrorKind, Inventory, InventoryError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inventory")
        .join(name)
}

fn load_err(name: &str) -> InventoryError {
    match Inventory::load(fixture(name)) {
        Ok(_) => panic!("{name} loaded, but it is broken"),
        Err(e) => e,
    }
}

/// (fixture, line, column, kind, phrase the message must contain)
const CASES: &[(&str, usize, usize, ErrorKind, &str)] = &[
    ("syntax_error.toml", 3, 28, ErrorKind::Syntax, "TOML syntax"),
    (
        "unknown_key.toml",
        8,
        1,
        ErrorKind::UnknownKey,
        "did you mean `labels`?",
    ),
    (
        "unknown_addon.toml",
        9,
        9,
        ErrorKind::UnknownKey,
        "did you mean `cert_manager`?",
    ),
    (
        "unknown_traefik_option.toml",
        10,
        1,
        ErrorKind::UnknownKey,
        "did you mean `redirect_https`?",
    ),
    (
        "missing_host.toml",
        4,
        1,
        ErrorKind::MissingKey,
        "missing field `host`",
    ),
    (
        "wrong_type.toml",
        5,
        8,
        ErrorKind::WrongType,
        "expected an integer",
    ),
    (
        "bad_role.toml",
        7,
        8,
        ErrorKind::InvalidValue,
        "role \"master\" is not valid; expected \"server\" or \"agent\"",
    ),
    (
        "bad_source.toml",
        5,
        10,
        ErrorKind::InvalidValue,
        "expected \"download\" or \"upload\"",
    ),
    (
        "bad_host_key_policy.toml",
        5,
        19,
        ErrorKind::InvalidValue,
        "expected \"strict\" or \"accept-new\"",
    ),
    (
        "bad_reclaim_policy.toml",
        11,
        48,
        ErrorKind::InvalidValue,
        "did you mean \"Retain\"?",
    ),
    (
        "removed_flannel_backend.toml",
        3,
        19,
        ErrorKind::InvalidValue,
        "use \"wireguard-native\"",
    ),
    (
        "unknown_disable.toml",
        3,
        12,
        ErrorKind::InvalidValue,
        "did you mean \"traefik\"?",
    ),
    (
        "node_name_uppercase.toml",
        10,
        8,
        ErrorKind::InvalidName,
        "e.g. \"worker-1\"",
    ),
    (
        "node_name_too_long.toml",
        10,
        8,
        ErrorKind::InvalidName,
        "the limit is 63",
    ),
    (
        "bad_cluster_name.toml",
        2,
        8,
        ErrorKind::InvalidName,
        "expected an RFC 1123 label",
    ),
    (
        "bad_storage_class_name.toml",
        11,
        12,
        ErrorKind::InvalidName,
        "uppercase letter 'L'",
    ),
    (
        "duplicate_node_name.toml",
        10,
        8,
        ErrorKind::Duplicate,
        "node name \"master-1\" is already used",
    ),
    (
        "duplicate_host.toml",
        11,
        8,
        ErrorKind::Duplicate,
        "is already node \"master-1\"",
    ),
    (
        "no_server.toml",
        7,
        8,
        ErrorKind::NoServer,
        "a cluster needs at least one",
    ),
    (
        "bad_host.toml",
        6,
        8,
        ErrorKind::InvalidHost,
        "put the user \"root\" in `user`",
    ),
    (
        "bad_ipv4_host.toml",
        6,
        8,
        ErrorKind::InvalidHost,
        "not a valid one",
    ),
    (
        "port_out_of_range.toml",
        8,
        8,
        ErrorKind::InvalidPort,
        "expected a port from 1 to 65535",
    ),
    (
        "bad_label_key.toml",
        13,
        12,
        ErrorKind::InvalidLabel,
        "label key \"node role\" is not valid",
    ),
    (
        "bad_label_value.toml",
        13,
        26,
        ErrorKind::InvalidLabel,
        "value \"data base\" is not valid",
    ),
    (
        "restricted_label.toml",
        13,
        12,
        ErrorKind::RestrictedLabel,
        "move it to api_labels",
    ),
    (
        "bad_taint.toml",
        8,
        11,
        ErrorKind::InvalidTaint,
        "node \"master-1\": taint \"foo\" is not valid",
    ),
    (
        "bad_taint_effect.toml",
        8,
        11,
        ErrorKind::InvalidTaint,
        "did you mean NoSchedule?",
    ),
    (
        "bad_k3s_version.toml",
        3,
        15,
        ErrorKind::InvalidVersion,
        "did you mean \"v1.36.3+k3s1\"?",
    ),
    (
        "bad_mirror.toml",
        5,
        10,
        ErrorKind::InvalidUrl,
        "expected an http:// or https:// URL",
    ),
    (
        "cidr_overlap.toml",
        4,
        16,
        ErrorKind::InvalidCidr,
        "overlaps cluster_cidr 10.0.0.0/8",
    ),
    (
        "unknown_server_flag.toml",
        5,
        1,
        ErrorKind::UnknownFlag,
        "did you mean \"kube-apiserver-arg\"?",
    ),
    (
        "server_flag_in_agent_config.toml",
        5,
        1,
        ErrorKind::WrongRoleFlag,
        "server-only k3s flag",
    ),
    (
        "managed_flag.toml",
        5,
        1,
        ErrorKind::ManagedFlag,
        "\"token\" is managed by bootstrap",
    ),
    (
        "bad_acme_email.toml",
        10,
        14,
        ErrorKind::InvalidEmail,
        "is not an e-mail address",
    ),
    (
        "zero_replicas.toml",
        11,
        40,
        ErrorKind::InvalidNumber,
        "replicas is 0; expected a number from 1",
    ),
    (
        "negative_weight.toml",
        17,
        45,
        ErrorKind::InvalidNumber,
        "weight -30 is not valid",
    ),
    (
        "all_zero_weights.toml",
        12,
        8,
        ErrorKind::InvalidNumber,
        "every weight is 0",
    ),
    (
        "bad_duration.toml",
        5,
        19,
        ErrorKind::InvalidDuration,
        "expected seconds (30) or a string",
    ),
    (
        "missing_manifest.toml",
        10,
        8,
        ErrorKind::InvalidPath,
        "relative to the inventory's directory",
    ),
    (
        "manifest_directory.toml",
        10,
        8,
        ErrorKind::InvalidPath,
        "is a directory, not a file",
    ),
    (
        "two_default_storage_classes.toml",
        12,
        27,
        ErrorKind::Conflict,
        "only one storage class can be the default",
    ),
    (
        "tls_issuer_without_cert_manager.toml",
        15,
        14,
        ErrorKind::Conflict,
        "needs [addons.cert_manager]",
    ),
    (
        "chart_cycle.toml",
        15,
        10,
        ErrorKind::Conflict,
        "charts wait for each other in a cycle: \"operator\" after \"app\" (line 15, column 10), \"app\" after \"operator\" (line 23, column 10)",
    ),
    (
        "unpinned_chart.toml",
        13,
        11,
        ErrorKind::InvalidVersion,
        "version \"~18.11\" is not a pinned version: a range or \"latest\" is not pinned",
    ),
];

#[test]
fn every_broken_inventory_is_located_and_explained() {
    let mut failures = Vec::new();
    for &(name, line, col, kind, phrase) in CASES {
        let err = load_err(name);
        let shown = err.to_string();
        let location = format!("{name}:{line}:{col}: error: ");
        let diag = &err.diagnostics()[0];
        if err.diagnostics().len() != 1
            || !shown.contains(&location)
            || !shown.contains(phrase)
            || diag.kind != kind
        {
            failures.push(format!(
                "{name}: expected {location}...{phrase} ({kind:?}), got ({:?}, {} errors):\n{shown}",
                diag.kind,
                err.diagnostics().len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn at_least_25_broken_inventories_are_covered() {
    assert!(CASES.len() >= 25);
    // Every fixture on disk is either in the table or has its own test below.
    let own_tests = ["multiple_errors.toml", "undefined_variable.toml"];
    for entry in std::fs::read_dir(fixture("")).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".toml") {
            assert!(
                CASES.iter().any(|c| c.0 == name) || own_tests.contains(&name),
                "fixture {name} is not checked"
            );
        }
    }
}

#[test]
fn the_display_names_the_file_as_given() {
    let err = load_err("bad_taint.toml");
    let first = err.to_string();
    assert!(
        first.starts_with(&format!(
            "{}:8:11: error: node \"master-1\": taint \"foo\" is not valid",
            fixture("bad_taint.toml").display()
        )),
        "{first}"
    );
    assert!(first.contains(
        "expected key=value:Effect or key:Effect where Effect is NoSchedule, PreferNoSchedule or NoExecute"
    ));
}

#[test]
fn all_problems_are_reported_one_per_line_in_file_order() {
    let err = load_err("multiple_errors.toml");
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    let expected = [
        (
            "multiple_errors.toml:2:8: error: ",
            "cluster name \"Fixture\"",
        ),
        (
            "multiple_errors.toml:3:15: error: ",
            "written with '+', not '-'",
        ),
        (
            "multiple_errors.toml:9:11: error: ",
            "the effect \"NoSchedul\" is unknown (did you mean NoSchedule?)",
        ),
        (
            "multiple_errors.toml:13:8: error: ",
            "is already node \"master-1\"",
        ),
        (
            "multiple_errors.toml:15:12: error: ",
            "kubelet refuses at registration",
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "{shown}");
    for (line, (location, phrase)) in lines.iter().zip(expected) {
        assert!(line.contains(location) && line.contains(phrase), "{line}");
    }
    let kinds: Vec<ErrorKind> = err.diagnostics().iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::InvalidName,
            ErrorKind::InvalidVersion,
            ErrorKind::InvalidTaint,
            ErrorKind::Duplicate,
            ErrorKind::RestrictedLabel
        ]
    );
}

#[test]
fn undefined_template_variables_point_into_the_manifest() {
    let err = load_err("undefined_variable.toml");
    let diags = err.diagnostics();
    assert_eq!(diags.len(), 1, "{err}");
    assert_eq!(diags[0].kind, ErrorKind::UndefinedVariable);
    let shown = err.to_string();
    assert!(
        shown.contains("manifests/quota.yaml:9:36: error: variables.prod_memroy is not defined"),
        "{shown}"
    );
    assert!(shown.contains("add prod_memroy = \"...\" to the inventory's [variables]"));
}
