//! Flags, config.yaml (+ drop-ins) and env vars, merged the way k3s does it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const SERVER_FLAGS: &str = include_str!("data/k3s-server-flags.txt");
const AGENT_FLAGS: &str = include_str!("data/k3s-agent-flags.txt");
/// `cmds.EtcdSnapshotFlags` (k3s `pkg/cli/cmds/etcd_snapshot.go` 12-165) plus `ls`'s `output`.
const ETCD_SNAPSHOT_FLAGS: &str = include_str!("data/k3s-etcd-snapshot-flags.txt");
const FLAG_TYPES: &str = include_str!("data/flag-types.txt");

/// Flags k3s splits on commas itself; all others are taken whole.
const COMMA_SPLIT: &[&str] = &[
    "tls-san",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "disable",
    "node-ip",
    "node-external-ip",
];

pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
    /// `k3s etcd-snapshot <sub>`.
    EtcdSnapshot,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::EtcdSnapshot => "etcd-snapshot",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Flag {
    pub name: String,
    pub aliases: Vec<String>,
    pub ty: String,
    pub env: Option<String>,
}

impl Flag {
    pub fn is_bool(&self) -> bool {
        self.ty == "bool"
    }
    pub fn is_slice(&self) -> bool {
        self.ty.starts_with("[]")
    }
}

pub fn flags(role: Role) -> Vec<Flag> {
    let list = match role {
        Role::Server => SERVER_FLAGS,
        Role::Agent => AGENT_FLAGS,
        Role::EtcdSnapshot => ETCD_SNAPSHOT_FLAGS,
    };
    let mut types: BTreeMap<&str, (&str, Option<&str>)> = BTreeMap::new();
    for line in FLAG_TYPES.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 4 && f[0] == role.name() {
            types.insert(f[1], (f[2], (f[3] != "-").then_some(f[3])));
        }
    }
    list.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.to_string();
            let aliases = it.map(str::to_string).collect();
            let (ty, env) = types
                .get(name.as_str())
                .copied()
                .unwrap_or(("string", None));
            Some(Flag {
                name,
                aliases,
                ty: ty.to_string(),
                env: env.map(str::to_string),
            })
        })
        .collect()
}

fn find<'a>(flags: &'a [Flag], key: &str) -> Option<&'a Flag> {
    flags
        .iter()
        .find(|f| f.name == key || f.aliases.iter().any(|a| a == key))
}

/// The merged configuration: canonical flag name → values (scalars have one).
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub values: BTreeMap<String, Vec<String>>,
    pub warnings: Vec<String>,
}

impl Config {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn list(&self, key: &str) -> Vec<String> {
        self.values.get(key).cloned().unwrap_or_default()
    }
    pub fn bool(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("true") | Some("1") | Some("t") | Some("TRUE")
        )
    }
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("data-dir").unwrap_or("/var/lib/rancher/k3s"))
    }
}

/// What went wrong, in the words k3s/urfave-cli prints.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `Incorrect Usage: flag provided but not defined: -x`
    Usage(String),
    Other(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Usage(flag) => {
                write!(f, "Incorrect Usage: flag provided but not defined: -{flag}")
            }
            ConfigError::Other(s) => f.write_str(s),
        }
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn yaml_values(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::Sequence(s) => s.iter().filter_map(yaml_scalar).collect(),
        other => yaml_scalar(other).into_iter().collect(),
    }
}

/// Reads config.yaml and its `.d` drop-ins (lexical order, last wins, `key+` appends).
/// Returns (key, values) in first-seen order.
pub fn read_config_files(path: &Path) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    }
    let dropin = PathBuf::from(format!("{}.d", path.display()));
    if let Ok(rd) = fs::read_dir(&dropin) {
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                let n = p.to_string_lossy().to_lowercase();
                n.ends_with(".yaml") || n.ends_with(".yml")
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f)
            .map_err(|e| ConfigError::Other(format!("failed to read {}: {e}", f.display())))?;
        if text.trim().is_empty() {
            continue;
        }
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::Other(format!("failed to parse {}: {e}", f.display())))?;
        let serde_yaml::Value::Mapping(map) = doc else {
            continue;
        };
        for (k, v) in map {
            let Some(k) = k.as_str() else { continue };
            let (key, append) = match k.strip_suffix('+') {
                Some(base) => (base.to_string(), true),
                None => (k.to_string(), false),
            };
            let vals = yaml_values(&v);
            if let Some(slot) = out.iter_mut().find(|(n, _)| *n == key) {
                if append {
                    slot.1.extend(vals);
                } else {
                    slot.1 = vals;
                }
            } else {
                out.push((key, vals));
            }
        }
    }
    Ok(out)
}

fn config_path(args: &[String]) -> PathBuf {
    if let Ok(p) = std::env::var("K3S_CONFIG_FILE") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for pre in ["--config", "-c"] {
            if a == pre {
                if let Some(v) = it.clone().next() {
                    return PathBuf::from(v);
                }
            } else if let Some(v) = a.strip_prefix(&format!("{pre}=")) {
                return PathBuf::from(v);
            }
        }
    }
    PathBuf::from(DEFAULT_CONFIG)
}

/// Parses `k3s server|agent ARGS` together with config files and env vars.
pub fn load(role: Role, args: &[String]) -> Result<Config, ConfigError> {
    let path = config_path(args);
    let file_vals = read_config_files(&path)?;
    load_with(role, &file_vals, args, &|k| std::env::var(k).ok())
}

pub fn load_with(
    role: Role,
    file_vals: &[(String, Vec<String>)],
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let flags = flags(role);
    let mut cfg = Config::default();
    // Config file values become `--key=value` args placed before CLI args.
    let mut argv: Vec<(String, String)> = Vec::new();
    for (key, vals) in file_vals {
        // `output` is `ls`'s own flag, not one of `EtcdSnapshotFlags`, which the config file is
        // checked against (k3s `pkg/configfilearg/parser.go` stripInvalidFlags).
        let snapshot_only_cli = role == Role::EtcdSnapshot && (key == "output" || key == "o");
        if find(&flags, key).is_none() || snapshot_only_cli {
            match role {
                Role::Server | Role::EtcdSnapshot => {
                    cfg.warnings.push(format!(
                        "Unknown flag --{key} found in config.yaml, skipping"
                    ));
                    continue;
                }
                Role::Agent => return Err(ConfigError::Usage(key.clone())),
            }
        }
        for v in vals {
            argv.push((key.clone(), v.clone()));
        }
    }
    let mut cli: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(stripped) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(ConfigError::Other(format!(
                "Incorrect Usage: unexpected argument {a:?}"
            )));
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (stripped.to_string(), None),
        };
        let Some(flag) = find(&flags, &name) else {
            return Err(ConfigError::Usage(name));
        };
        let value = match inline {
            Some(v) => v,
            None if flag.is_bool() => "true".into(),
            None => {
                let v = args.get(i).cloned().ok_or_else(|| {
                    ConfigError::Other(format!("Incorrect Usage: flag needs an argument: -{name}"))
                })?;
                i += 1;
                v
            }
        };
        cli.push((flag.name.clone(), value));
    }
    for (key, value) in argv.into_iter().chain(cli) {
        let flag = find(&flags, &key).expect("validated above");
        let name = flag.name.clone();
        let mut vals = if COMMA_SPLIT.contains(&name.as_str()) {
            value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            vec![value]
        };
        let entry = cfg.values.entry(name.clone()).or_default();
        if flag.is_slice() {
            entry.append(&mut vals);
        } else {
            *entry = vals;
        }
    }
    for flag in &flags {
        if cfg.values.contains_key(&flag.name) {
            continue;
        }
        if let Some(var) = &flag.env {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                let vals = if COMMA_SPLIT.contains(&flag.name.as_str()) {
                    v.split(',').map(|s| s.trim().to_string()).collect()
                } else {
                    vec![v]
                };
                cfg.values.insert(flag.name.clone(), vals);
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flag_lists_have_expected_sizes() {
        assert_eq!(flags(Role::Server).len(), 126);
        assert_eq!(flags(Role::Agent).len(), 46);
        assert!(flags(Role::Server)
            .iter()
            .any(|f| f.name == "cluster-init" && f.is_bool()));
    }

    #[test]
    fn server_skips_unknown_keys_agent_rejects() {
        let file = vec![
            ("bogus".to_string(), s(&["1"])),
            ("token".into(), s(&["abc"])),
        ];
        let c = load_with(Role::Server, &file, &[], &|_| None).unwrap();
        assert_eq!(
            c.warnings,
            vec!["Unknown flag --bogus found in config.yaml, skipping"]
        );
        assert_eq!(c.get("token"), Some("abc"));
        let file = vec![("disable".to_string(), s(&["traefik"]))];
        let e = load_with(Role::Agent, &file, &[], &|_| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Incorrect Usage: flag provided but not defined: -disable"
        );
    }

    #[test]
    fn comma_split_only_for_listed_flags() {
        let file = vec![
            ("disable".to_string(), s(&["traefik,servicelb"])),
            ("node-label".into(), s(&["a=b,c"])),
        ];
        let c = load_with(Role::Server, &file, &[], &|_| None).unwrap();
        assert_eq!(c.list("disable"), s(&["traefik", "servicelb"]));
        assert_eq!(c.list("node-label"), s(&["a=b,c"]));
    }

    #[test]
    fn cli_forms_aliases_and_env() {
        let args = s(&[
            "--token=x",
            "-d",
            "/tmp/d",
            "--cluster-init",
            "--node-name",
            "n1",
        ]);
        let env = |k: &str| (k == "K3S_URL").then(|| "https://a:6443".to_string());
        let c = load_with(Role::Server, &[], &args, &env).unwrap();
        assert_eq!(c.get("token"), Some("x"));
        assert_eq!(c.get("data-dir"), Some("/tmp/d"));
        assert!(c.bool("cluster-init"));
        assert_eq!(c.get("node-name"), Some("n1"));
        assert_eq!(c.get("server"), Some("https://a:6443"));
        // CLI wins over file for scalars.
        let file = vec![("token".to_string(), s(&["file"]))];
        let c = load_with(Role::Server, &file, &s(&["-t", "cli"]), &|_| None).unwrap();
        assert_eq!(c.get("token"), Some("cli"));
        let e = load_with(Role::Agent, &[], &s(&["--cluster-init"]), &|_| None).unwrap_err();
        assert_eq!(e, ConfigError::Usage("cluster-init".into()));
    }

    #[test]
    fn dropins_merge_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.yaml");
        fs::write(&main, "token: a\nnode-label:\n  - x=1\n").unwrap();
        fs::create_dir(dir.path().join("config.yaml.d")).unwrap();
        fs::write(dir.path().join("config.yaml.d/10-a.yaml"), "token: b\n").unwrap();
        fs::write(
            dir.path().join("config.yaml.d/20-b.yml"),
            "node-label+: [y=2]\n",
        )
        .unwrap();
        fs::write(dir.path().join("config.yaml.d/30-c.txt"), "token: c\n").unwrap();
        let v = read_config_files(&main).unwrap();
        let c = load_with(Role::Agent, &v, &[], &|_| None).unwrap();
        assert_eq!(c.get("token"), Some("b"));
        assert_eq!(c.list("node-label"), s(&["x=1", "y=2"]));
    }
}
