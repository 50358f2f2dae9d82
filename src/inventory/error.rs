//! Inventory errors and warnings, each tied to a file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// What kind of problem a [`Diagnostic`] reports. Tests and callers match on this; people read
/// the message.
///
/// | kind | raised when |
/// |---|---|
/// | `NotUtf8` | the file is not UTF-8 |
/// | `Syntax` | the file is not valid TOML |
/// | `UnknownKey` | a key no table accepts (typo); the message suggests the closest known key |
/// | `MissingKey` | a required key is absent (`cluster.name`, `node.name/host/role`, ...) |
/// | `WrongType` | a value has the wrong TOML type (string vs integer vs table ...) |
/// | `InvalidValue` | a value outside its allowed set (`role`, `source`, `host_key_policy`, `flannel_backend`, `datastore`, `disable`, `reclaim_policy`, ...) |
/// | `InvalidName` | a cluster, node, storage class, route, namespace, service or manifest name that Kubernetes or k3s would refuse |
/// | `Duplicate` | two nodes with one name, two nodes on one host and port, duplicate storage classes, routes, manifests, taints |
/// | `NoServer` | no node has `role = "server"` |
/// | `InvalidHost` | a host, api_endpoint, tls_san or bastion that is neither an IP address nor a DNS name |
/// | `InvalidPort` | a port outside 1-65535 |
/// | `InvalidLabel` | a label key or value that breaks Kubernetes label syntax |
/// | `RestrictedLabel` | a `kubernetes.io`/`k8s.io` label the kubelet refuses at registration (or that k3s owns) |
/// | `InvalidTaint` | a taint not in `key=value:Effect` / `key:Effect` form, or with an unknown effect |
/// | `InvalidVersion` | a k3s version not `vMAJOR.MINOR.PATCH+k3sN`, or a chart version in the wrong form |
/// | `InvalidUrl` | a mirror that is not an http(s) URL, a backup target with an unknown scheme |
/// | `InvalidCidr` | a bad CIDR, overlapping pod/service ranges, cluster DNS outside the service range |
/// | `UnknownFlag` | a `server_config`/`agent_config`/node `config` key k3s does not have |
/// | `WrongRoleFlag` | a server-only k3s flag in agent config (the agent would not start) |
/// | `ManagedFlag` | a k3s flag the tool sets itself (`token`, `server`, `node-label`, ...) or that must match on all servers |
/// | `InvalidFlagValue` | a k3s flag value that is a table, a float or a date |
/// | `InvalidEmail` | `acme_email` that is not an e-mail address |
/// | `InvalidNumber` | replicas < 1, negative or all-zero weights, zero timeouts |
/// | `InvalidDuration` | a timeout that is neither seconds nor a `30s`/`5m`/`1h` string |
/// | `InvalidPath` | a `~user/` path, an unreadable or missing manifest file |
/// | `UndefinedVariable` | a manifest uses `{{ variables.x }}` that `[variables]` does not define |
/// | `Conflict` | settings that cannot hold together (sqlite with several servers, two default storage classes, a route's TLS issuer that cert-manager does not create, ...) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    NotUtf8,
    Syntax,
    UnknownKey,
    MissingKey,
    WrongType,
    InvalidValue,
    InvalidName,
    Duplicate,
    NoServer,
    InvalidHost,
    InvalidPort,
    InvalidLabel,
    RestrictedLabel,
    InvalidTaint,
    InvalidVersion,
    InvalidUrl,
    InvalidCidr,
    UnknownFlag,
    WrongRoleFlag,
    ManagedFlag,
    InvalidFlagValue,
    InvalidEmail,
    InvalidNumber,
    InvalidDuration,
    InvalidPath,
    UndefinedVariable,
    Conflict,
}

/// One problem in a file, at a 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it (the inventory, or a manifest it references).
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
    /// What is wrong and what would be right, without the location prefix.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Something legal but probably unwanted (an even number of etcd servers, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why an inventory could not be loaded. `Display` gives one `file:line:col: error: ...` line per
/// problem, all problems at once.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}: error: cannot read the inventory: {source}; check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", join_lines(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl InventoryError {
    /// Every located problem (empty for `Read`).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            InventoryError::Read { .. } => &[],
            InventoryError::Invalid { diagnostics } => diagnostics,
        }
    }
}

fn join_lines(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Maps byte offsets of one text to 1-based line and column.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    /// 1-based (line, column); offsets past the end or inside a character are clamped, never panic.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while offset > 0 && !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// Collects diagnostics and warnings for one inventory file.
pub(crate) struct Report<'a> {
    pub file: PathBuf,
    pub index: LineIndex<'a>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Warning>,
    /// Sort key (byte offset) kept beside each error so the output follows the file.
    order: Vec<(usize, usize)>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: PathBuf, text: &'a str) -> Self {
        Report {
            file,
            index: LineIndex::new(text),
            errors: Vec::new(),
            warnings: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Span of the first occurrence of `key` in the text, for errors about a whole table.
    pub(crate) fn key_span(&self, key: &str) -> Range<usize> {
        match self.index.text.find(key) {
            Some(i) => i..i + key.len(),
            None => 0..0,
        }
    }

    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) {
        let (line, column) = self.index.position(span.start);
        self.order.push((0, span.start));
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            kind,
            message: message.into(),
        });
    }

    /// An error located in another file (a manifest), listed after the inventory's own errors.
    pub(crate) fn error_in(&mut self, diag: Diagnostic) {
        self.order.push((1, self.errors.len()));
        self.errors.push(diag);
    }

    pub(crate) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.index.position(span.start);
        self.warnings.push(Warning {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Errors ordered by their place in the file (stable for equal places).
    pub(crate) fn take_errors(&mut self) -> Vec<Diagnostic> {
        let mut pairs: Vec<_> = self
            .order
            .drain(..)
            .zip(self.errors.drain(..))
            .enumerate()
            .map(|(i, (o, d))| ((o, i), d))
            .collect();
        pairs.sort_by_key(|(k, _)| *k);
        pairs.into_iter().map(|(_, d)| d).collect()
    }
}
