fn main() {
    eprintln!("bootstrap: no commands are available yet");
    std::process::exit(2);
}
