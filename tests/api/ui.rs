//! The admin web UI end to end: headless Chromium (driven by playwright-core
//! in `tests/ui/admin.e2e.mjs`) against the real roles, with a preset
//! provider pointed at a wiremock upstream.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{ADMIN_TOKEN, Options, TestEnv, completion};

#[tokio::test]
async fn admin_ui_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ui_tests = root.join("tests/ui");
    assert!(
        ui_tests.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/ui` (scripts/test does it)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium` (scripts/test does it)"
    );

    // Long enough for the Jobs page's slow jobs.
    let env = TestEnv::with(Options {
        upstream_timeout: Duration::from_secs(30),
        ..Options::default()
    })
    .await;
    let upstream = MockServer::start().await;
    // The Jobs page's jobs (mounted first: the first matching mock answers):
    // one the UI cancels while it runs, one that finishes a few seconds
    // late, one the upstream refuses.
    for (prompt, delay, status) in [
        ("job to cancel", Duration::from_secs(25), 200),
        ("job that takes a while", Duration::from_secs(16), 200),
        ("job the upstream refuses", Duration::ZERO, 400),
    ] {
        let response = if status == 200 {
            ResponseTemplate::new(200).set_body_json(completion(
                "deepseek-v4-flash",
                "Done.",
                10,
                5,
            ))
        } else {
            ResponseTemplate::new(status).set_body_json(json!({"error": {
                "message": "The mock refuses this prompt.",
                "type": "invalid_request_error",
            }}))
        };
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .and(body_string_contains(prompt))
            .respond_with(response.set_delay(delay))
            .mount(&upstream)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "deepseek-v4-flash",
            "Hi!",
            1200,
            350,
        )))
        .mount(&upstream)
        .await;

    let mut command = tokio::process::Command::new("node");
    command
        .arg(ui_tests.join("admin.e2e.mjs"))
        .current_dir(&ui_tests)
        .env("AIGW_URL", &env.base)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MOCK_URL", upstream.uri())
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // AIGW_UI_SCREENSHOTS=docs/screenshots refreshes the README's screenshots.
    if let Ok(dir) = std::env::var("AIGW_UI_SCREENSHOTS") {
        command.env("SCREENSHOT_DIR", root.join(dir));
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), command.output())
        .await
        .expect("the browser test took more than 4 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "UI end-to-end test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
