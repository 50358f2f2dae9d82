//! The config.yaml keys k3s accepts per role (reference/k3s-*-flags.txt: one flag
//! a line, its aliases after it). An agent given a server-only key refuses to
//! start, so every key the tool renders is checked against these lists.

use super::Role;

pub(crate) const SERVER_FLAGS: &str = include_str!("server-flags.txt");
pub(crate) const AGENT_FLAGS: &str = include_str!("agent-flags.txt");

fn list(role: Role) -> &'static str {
    match role {
        Role::Server => SERVER_FLAGS,
        Role::Agent => AGENT_FLAGS,
    }
}

/// Whether `key` (a flag name or alias, without dashes, optionally with the
/// trailing `+` that appends in config.yaml) is a flag of `role`.
pub fn is_flag(role: Role, key: &str) -> bool {
    let key = key.strip_suffix('+').unwrap_or(key);
    list(role)
        .lines()
        .any(|line| line.split_whitespace().any(|name| name == key))
}

/// Every flag name (first name on each line) of `role`.
pub fn names(role: Role) -> impl Iterator<Item = &'static str> {
    list(role)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_have_the_reference_sizes() {
        assert_eq!(names(Role::Server).count(), 126);
        assert_eq!(names(Role::Agent).count(), 46);
    }

    #[test]
    fn server_only_keys_are_not_agent_flags() {
        for key in [
            "disable",
            "tls-san",
            "cluster-init",
            "flannel-backend",
            "agent-token",
        ] {
            assert!(is_flag(Role::Server, key), "{key}");
            assert!(!is_flag(Role::Agent, key), "{key}");
        }
    }

    #[test]
    fn aliases_and_append_suffix() {
        assert!(is_flag(Role::Agent, "t"));
        assert!(is_flag(Role::Agent, "node-label+"));
        assert!(!is_flag(Role::Agent, "nonsense"));
    }
}
