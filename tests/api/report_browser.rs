//! The report page in a real browser: headless Chromium loads it from the running server,
//! the rendered DOM must hold the charts, and a screenshot is kept
//! (`target/report-screenshot.png`; CI keeps it as an artifact). Without Chromium the check
//! is skipped and says so, unless COMPRESSD_REQUIRE_CHROMIUM=1 (set by CI) makes it fail.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::helpers::TestApp;

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

const FLAGS: [&str; 4] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
];

pub async fn render_in_chromium(app: &TestApp, job: &str) {
    let url = app.url(&format!("/v1/jobs/{job}/report"));
    let Some(dom) = in_chromium(&url, "report-screenshot.png", "1280,2400").await else {
        return;
    };
    assert!(
        dom.contains("<figure class=\"chart\""),
        "rendered DOM lacks the charts:\n{dom:.2000}"
    );
    assert!(
        dom.matches("<svg").count() >= 4,
        "fewer than four charts rendered"
    );
}

/// Loads `url` in headless Chromium (scripts run until the page is idle): the DOM as rendered,
/// and a screenshot kept at `target/<shot>`. None when there is no Chromium (which fails when
/// COMPRESSD_REQUIRE_CHROMIUM is set).
pub async fn in_chromium(url: &str, shot: &str, window: &str) -> Option<String> {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("COMPRESSD_REQUIRE_CHROMIUM").is_err(),
            "COMPRESSD_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!("no chromium on PATH; the browser check is skipped");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: Vec<String>| {
        let mut cmd = Command::new(&browser);
        cmd.args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--virtual-time-budget=10000")
            .args(extra)
            .arg(url)
            .kill_on_drop(true);
        cmd
    };
    let dom = tokio::time::timeout(
        Duration::from_secs(90),
        run(vec!["--dump-dom".into()]).output(),
    )
    .await
    .expect("chromium answers within 90 s")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // Tests run at once: each shoots into its own file, then renames.
    let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(shot);
    let taken = profile.path().join("shot.png");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        run(vec![
            format!("--screenshot={}", taken.display()),
            format!("--window-size={window}"),
        ])
        .output(),
    )
    .await
    .expect("chromium answers within 90 s")
    .expect("chromium runs");
    let size = std::fs::metadata(&taken).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot of {size} bytes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::create_dir_all(kept.parent().expect("target")).is_ok() {
        let staged = kept.with_extension(format!("{}.png", uuid::Uuid::new_v4()));
        if std::fs::copy(&taken, &staged).is_ok() {
            let _ = std::fs::rename(&staged, &kept);
        }
    }
    Some(dom)
}
