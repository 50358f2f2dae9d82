//! The systemd unit and env file, as install.sh writes them (reference §2.2–2.3).

use tera::Context;

use super::Role;
use crate::templates::{self, TemplateError};

/// The unit for `role`, byte for byte what install.sh writes with no extra
/// arguments: every setting lives in config.yaml instead, so the unit never
/// changes when the inventory does and a config change never needs a daemon-reload.
pub fn render_unit(role: Role) -> Result<String, TemplateError> {
    let mut ctx = Context::new();
    ctx.insert("service", role.service());
    ctx.insert("command", role.command());
    templates::render("k3s/k3s.service", &ctx)
}

/// `/usr/local/bin/k3s-killall.sh`, as install.sh writes it (reference §2.6).
pub fn render_killall() -> Result<String, TemplateError> {
    templates::render("k3s/k3s-killall.sh", &Context::new())
}

/// `/usr/local/bin/<service>-uninstall.sh`, as install.sh writes it (§2.7).
pub fn render_uninstall(role: Role) -> Result<String, TemplateError> {
    let mut ctx = Context::new();
    ctx.insert("service", role.service());
    templates::render("k3s/k3s-uninstall.sh", &ctx)
}

/// What `bootstrap reset` runs on a host: the killall steps, then both
/// services and everything k3s left removed.
pub fn render_reset() -> Result<String, TemplateError> {
    templates::render("k3s/reset.sh", &Context::new())
}

/// The env file (0600) bootstrap creates when there is none: empty, since bootstrap keeps
/// every setting, the tokens included, in config.yaml. An existing one is the operator's
/// (proxy settings) and is never rewritten.
pub fn render_env(_role: Role) -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_unit_matches_install_sh() {
        let unit = render_unit(Role::Server).unwrap();
        assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3s.service.env\n"));
        assert!(unit.ends_with("ExecStart=/usr/local/bin/k3s \\\n    server \\\n\n"));
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("TimeoutStartSec=0\n"));
    }

    #[test]
    fn scripts_render_with_their_parts() {
        let killall = render_killall().unwrap();
        assert!(killall.starts_with("#!/bin/sh\n"));
        assert!(killall.contains("systemctl stop"));
        let agent = render_uninstall(Role::Agent).unwrap();
        assert!(agent.contains("systemctl disable k3s-agent "));
        assert!(agent.contains("/usr/local/bin/k3s-killall.sh\n"));
        assert!(agent.contains("Additional k3s services installed"));
        assert!(agent.contains("rm -rf /etc/rancher/k3s"));
        let reset = render_reset().unwrap();
        assert!(reset.contains("systemctl stop") && reset.contains("echo uninstalled"));
        assert!(!reset.contains("{%"));
    }

    #[test]
    fn agent_unit_differs_only_in_env_file_and_command() {
        let server = render_unit(Role::Server).unwrap();
        let agent = render_unit(Role::Agent).unwrap();
        let expected = server
            .replace("k3s.service.env", "k3s-agent.service.env")
            .replace("    server \\", "    agent \\");
        assert_eq!(agent, expected);
        assert!(agent.contains("Type=notify\n"));
    }
}
