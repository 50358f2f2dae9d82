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
        skip("lab-only test (uses the lab mirror), BOOTSTRAP_E2E=vagrant");
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

    // The same release with a good binary and its own air-gap images (not v1's, so the
    // nodes need them), tampered on the mirror: refused, the nodes keep the images they had.
    let mut v2_images = std::fs::read(mirror.join(v1).join(images)).unwrap();
    v2_images.extend_from_slice(b"v2");
    let v2_images_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&v2_images))
    };
    std::fs::write(dir.join("k3s"), &good).unwrap();
    std::fs::write(
        dir.join("sha256sum-amd64.txt"),
        format!("{good_sha}  k3s\n{v2_images_sha}  {images}\n"),
    )
    .unwrap();
    v2_images.extend_from_slice(b"tampered");
    std::fs::write(dir.join(images), &v2_images).unwrap();
    // A release's files never change upstream, so the cache keeps the sums file it read for
    // this version; the release was rewritten here, so its cache goes.
    std::fs::remove_dir_all(work.path("cache").join(v2)).unwrap();
    b.airgap_images = true;
    for source in ["download", "upload"] {
        b.source = source;
        work.write_inventory(&b.render());
        let inv = work.inventory();
        let out = work.run(&["up", inv.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "images, {source}: {err}");
        assert!(
            err.contains("sha256") && err.contains(&v2_images_sha),
            "images, {source}: {err}"
        );
        for n in ["master-1", "worker-1"] {
            let path = format!("/var/lib/rancher/k3s/agent/images/{images}");
            assert_eq!(
                sha256_of(&lab, n, &path),
                images_sha,
                "images, {source}: replaced on {n}"
            );
        }
        assert_eq!(
            sh(&lab, "master-1", "systemctl is-active k3s").trim(),
            "active"
        );
    }
}

/// Issue 13 item 4: the temp files an upload or write cut off mid-way leaves (an executable
/// partial binary in /usr/local/bin, a partial config) are removed by the next run, which
/// touches nothing else; the run after reports no changes.
#[test]
fn an_interrupted_runs_temp_files_are_removed_by_the_next_run() {
    if vagrant_mode() {
        skip("lab-only test (plants files as root), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-leftover", 1, 1, 0);
    let work = Workdir::new();
    let mut b = InventoryBuilder::new(&lab, "leftover");
    b.source = "upload";
    b.cache_dir = Some(work.path("cache"));
    work.write_inventory(&b.render());
    work.up_json();
    let before = fingerprint(&lab, "master-1");
    let partial = "/usr/local/bin/..k3s.bootstrap-upload.bootstrap-tmp-5e1f00d2";
    let config = "/etc/rancher/k3s/.config.yaml.bootstrap-tmp-9c3a";
    let theirs = "/usr/local/bin/.someone-elses.tmp";
    sh(
        &lab,
        "master-1",
        &format!("head -c 4096 /usr/local/bin/k3s > {partial}; chmod 755 {partial}; echo 'token: half' > {config}; touch {theirs}"),
    );
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 1, "{sum}");
    let host = &sum["hosts"][0];
    let change = host["changes"][0].as_str().unwrap();
    assert!(
        change.starts_with("remove what an interrupted run left: "),
        "{sum}"
    );
    assert!(change.contains(partial) && change.contains(config), "{sum}");
    let left = sh(
        &lab,
        "master-1",
        &format!("ls -a {partial} {config} {theirs} 2>/dev/null; true"),
    );
    assert_eq!(left.trim(), theirs, "only bootstrap's own temp files go");
    sh(&lab, "master-1", &format!("rm -f {theirs}"));
    assert_eq!(
        before,
        fingerprint(&lab, "master-1"),
        "nothing else changed, no restart"
    );
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
}
