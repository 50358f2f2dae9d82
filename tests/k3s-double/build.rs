fn main() {
    println!("cargo:rerun-if-env-changed=K3S_DOUBLE_VERSION");
}
