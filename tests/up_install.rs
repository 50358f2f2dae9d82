//! Where k3s comes from: `download` on the hosts and `upload` from the
//! operator's cache, both checked against the release's sums; a tampered
//! binary is refused and the host keeps what it had.

mod common;

use common::*;

fn sha256_of(lab: &xtask::lab::Lab, node: &str, path: &str) -> String {
    sh(lab, node, &format!("sha256sum {path} | cut -d' ' -f1"))
        .trim()
        .to_string()
}

#[test]
fn upload_then_download_and_tampered_binaries_are_refused() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (uses the lab mirror), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-src", 2, 1, 0);
    let work = Workdir::new();
    let v1 = xtask::lab::DEFAULT_K3S_VERSION;
    let mirror = lab.mirror_dir();
    let good = std::fs::read(mirror.join(v1).join("k3s")).unwrap();
    let good_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&good))
    };

    // Fresh install through the upload path, with the air-gap images.
    let mut b = InventoryBuilder::new(&lab, "src");
    b.source = "upload";
    b.cache_dir = Some(work.path("cache"));
    b.airgap_images = true;
    work.write_inventory(&b.render());
    work.up_json();
    let images = "k3s-airgap-images-amd64.tar.gz";
    let images_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(mirror.join(v1).join(images)).unwrap(),
        ))
    };
    for n in ["master-1", "worker-1"] {
        let path = format!("/var/lib/rancher/k3s/agent/images/{images}");
        assert_eq!(sha256_of(&lab, n, &path), images_sha);
    }
    for n in ["master-1", "worker-1"] {
        assert_eq!(sha256_of(&lab, n, "/usr/local/bin/k3s"), good_sha);
        assert_eq!(sh(&lab, n, "readlink /usr/local/bin/kubectl").trim(), "k3s");
    }
    assert!(work.path("cache").join(v1).join("k3s").is_file());

    // Same version through download: nothing to do.
    b.source = "download";
    work.write_inventory(&b.render());
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // A release whose binary does not match its sums file.
    let v2 = "v1.36.4+k3s1";
    let dir = mirror.join(v2);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sha256sum-amd64.txt"),
        format!("{good_sha}  k3s\n"),
    )
    .unwrap();
    let mut evil = good.clone();
    evil.extend_from_slice(b"\n#tampered\n");
    std::fs::write(dir.join("k3s"), &evil).unwrap();

    let before = fingerprint(&lab, "worker-1");
    b.version = v2.to_string();
    b.airgap_images = false;
    for source in ["download", "upload"] {
        b.source = source;
        work.write_inventory(&b.render());
        let inv = work.inventory();
        let out = work.run(&["up", inv.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{source}: {err}");
        assert!(
            err.contains("sha256") && err.contains(&good_sha),
            "{source}: {err}"
        );
        for n in ["master-1", "worker-1"] {
            assert_eq!(
                sha256_of(&lab, n, "/usr/local/bin/k3s"),
                good_sha,
                "{source} replaced the binary on {n}"
            );
        }
        assert_eq!(
            sh(&lab, "master-1", "systemctl is-active k3s").trim(),
            "active"
        );
    }
    assert_eq!(before, fingerprint(&lab, "worker-1"));
}
