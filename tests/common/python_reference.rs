//! Checks against Python reference implementations (the `gguf` package, llama-cpp-python): the
//! script prints a marker when the package it needs is not installed, and the check is then
//! skipped, unless CI set the environment variable that makes the package required.

use std::process::Command;

/// What the reference script printed on standard output; None when it printed `missing`, which
/// fails the test instead when the environment variable `require` is set. `package` is what
/// to install; `check` names the check in a failure.
pub fn reference_output(
    check: &str,
    command: &mut Command,
    missing: &str,
    require: &str,
    package: &str,
) -> Option<String> {
    let out = command.output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.trim() == missing {
        assert!(std::env::var(require).is_err(), "pip install {package}");
        eprintln!("{package} is not installed; the check against it was skipped");
        return None;
    }
    assert!(
        out.status.success(),
        "{check}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text)
}
