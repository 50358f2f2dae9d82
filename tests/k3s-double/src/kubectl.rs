//! `k3s kubectl` (and the `kubectl` link): upstream kubectl with k3s's default kubeconfig, as
//! k3s `pkg/kubectl/main.go` does it. k3s links kubectl into its binary; the lab puts the
//! upstream binary in the node image instead, at `KUBECTL`.

use std::os::unix::process::CommandExt;
use std::path::Path;

pub const KUBECTL: &str = "/usr/lib/k3s-double/kubectl";
const GLOBAL_CONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

pub fn main(args: &[String]) -> ! {
    let mut kubenv = std::env::var("KUBECONFIG").unwrap_or_default();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--kubeconfig=") {
            kubenv = v.to_string();
        } else if a == "--kubeconfig" {
            if let Some(v) = args.get(i + 1) {
                kubenv = v.clone();
            }
        }
    }
    let mut cmd = std::process::Command::new(
        std::env::var("K3S_DOUBLE_KUBECTL").unwrap_or_else(|_| KUBECTL.to_string()),
    );
    if kubenv.is_empty() {
        // server.HomeKubeConfig(false, false): the global file if it exists, else ~/.kube/k3s.yaml.
        let config = if Path::new(GLOBAL_CONFIG).exists() {
            GLOBAL_CONFIG.to_string()
        } else {
            format!(
                "{}/.kube/k3s.yaml",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into())
            )
        };
        if Path::new(&config).exists() {
            cmd.env("KUBECONFIG", &config);
        }
    }
    let err = cmd.arg0("kubectl").args(args).exec();
    eprintln!(
        "k3s: cannot run kubectl ({}): {err}; the lab's node image provides it",
        cmd.get_program().to_string_lossy()
    );
    std::process::exit(1);
}
