//! Shell quoting. SSH carries one command string that the remote login shell parses, so every
//! value spliced into a command goes through [`sh_quote`].

/// Quotes `s` for a POSIX shell: single quotes, with embedded single quotes written as `'\''`.
/// Plain words made only of safe characters are returned as they are, to keep logs readable.
pub fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b':' | b'=' | b'+' | b'@' | b',' | b'%'
                )
        });
    if safe {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Joins already separate arguments into one command line, quoting each.
pub fn sh_join<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    args.into_iter()
        .map(|a| sh_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Wraps a command so it runs as root through sudo without ever prompting: `-n` makes sudo fail
/// at once instead of waiting for a password nobody will type. `sh -c` keeps pipes, redirections
/// and `&&` inside the privileged part.
pub fn sudo_wrap(cmd: &str) -> String {
    format!("sudo -n sh -c {}", sh_quote(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_plain() {
        assert_eq!(
            sh_quote("/etc/rancher/k3s/config.yaml"),
            "/etc/rancher/k3s/config.yaml"
        );
        assert_eq!(sh_quote("abc-1.2_3"), "abc-1.2_3");
    }

    #[test]
    fn quotes_specials() {
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("a\nb"), "'a\nb'");
        assert_eq!(sh_quote("*"), "'*'");
    }

    #[test]
    fn join_and_sudo() {
        assert_eq!(sh_join(["echo", "a b", "c"]), "echo 'a b' c");
        assert_eq!(
            sudo_wrap("echo 'x' | cat"),
            "sudo -n sh -c 'echo '\\''x'\\'' | cat'"
        );
    }

    /// The quoting must survive a real shell: run `sh -c` locally and compare.
    #[test]
    fn roundtrip_through_sh() {
        let nasty = [
            "it's",
            "a \"b\" c",
            "$HOME",
            "`id`",
            "back\\slash",
            "new\nline",
            "",
            "*?[]",
        ];
        for s in nasty {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "for {s:?}");
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sh -c {}",
                sh_quote(&format!("printf %s {}", sh_quote("it's $x")))
            ))
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $x");
    }
}
