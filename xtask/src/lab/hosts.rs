//! Lab DNS names in the machine's `/etc/hosts`, in a block per lab between marker lines, so
//! `lab down` (or a later cleanup) removes exactly what the lab added.

use anyhow::{Context, Result};
use std::path::Path;

const HOSTS: &str = "/etc/hosts";

fn markers(lab: &str) -> (String, String) {
    (
        format!("# bootstrap-lab {lab} begin"),
        format!("# bootstrap-lab {lab} end"),
    )
}

fn without_block(text: &str, lab: &str) -> String {
    let (begin, end) = markers(lab);
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == begin {
            inside = true;
            continue;
        }
        if inside {
            if line == end {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Rewrites the file in place: /etc/hosts may be a bind mount that a rename cannot replace.
fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Adds (or replaces) the lab's block of `address name` lines. Call under the global lock.
pub fn add(lab: &str, entries: &[(String, String)]) -> Result<()> {
    let path = Path::new(HOSTS);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = without_block(&text, lab);
    let (begin, end) = markers(lab);
    out.push_str(&begin);
    out.push('\n');
    for (addr, name) in entries {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    out.push_str(&end);
    out.push('\n');
    write(path, &out)
}

/// Removes the lab's block, if there is one. Call under the global lock.
pub fn remove(lab: &str) -> Result<()> {
    let path = Path::new(HOSTS);
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let out = without_block(&text, lab);
    if out != text {
        write(path, &out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_removed_exactly() {
        let text = "127.0.0.1 localhost\n# bootstrap-lab a begin\n10.0.0.1\tx.a.lab.test\n# bootstrap-lab a end\n::1 ip6\n";
        assert_eq!(without_block(text, "a"), "127.0.0.1 localhost\n::1 ip6\n");
        assert_eq!(without_block(text, "b"), text);
    }
}
