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

    /// install.sh's unit heredoc, recorded from upstream, expanded as install.sh expands it
    /// with no extra arguments: the rendered unit is that, byte for byte, for both roles.
    #[test]
    fn units_are_install_shs_byte_for_byte() {
        let fixture =
            include_str!("../../tests/fixtures/upstream/k3s-service-install-sh-heredoc.txt");
        let heredoc: String = fixture
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        for role in [Role::Server, Role::Agent] {
            let expected = heredoc
                .replace("${SYSTEMD_TYPE}", "notify")
                .replace(
                    "${FILE_K3S_ENV}",
                    &format!("/etc/systemd/system/{}.service.env", role.service()),
                )
                .replace("${BIN_DIR}", "/usr/local/bin")
                // setup_env: CMD_K3S_EXEC="${CMD_K3S}$(quote_indent "$@")", and quote_indent
                // prints ' \\\n' before any argument; $(...) drops the newline.
                .replace("${CMD_K3S_EXEC}", &format!("{} \\\\", role.command()))
                .replace("\\\\", "\\");
            assert_eq!(render_unit(role).unwrap(), expected, "{}", role.service());
        }
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
