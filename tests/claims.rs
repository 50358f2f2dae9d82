//! tests/README.md names, for every claim README.md makes, the tests that hold it. Every name
//! there must be a test that exists: a renamed or deleted test cannot leave a claim pointing at
//! nothing.

use std::path::Path;

#[test]
fn every_test_tests_readme_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("tests/README.md")).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for quoted in table.split('`').skip(1).step_by(2) {
        let Some((file, name)) = quoted.split_once("::") else {
            continue;
        };
        if !file.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("tests/README.md names {file}: {e}"));
        let defined = [format!("fn {name}("), format!("fn {name}<")]
            .iter()
            .any(|d| text.contains(d.as_str()));
        if !defined {
            missing.push(quoted.to_string());
        }
        checked += 1;
    }
    assert!(
        missing.is_empty(),
        "tests/README.md names tests that do not exist: {missing:#?}"
    );
    assert!(
        checked > 60,
        "only {checked} test names found in tests/README.md"
    );
}
