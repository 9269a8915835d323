//! Single sign-on against a real OpenID provider: `oidc-provider-mock`
//! (PyPI, pinned in scripts/test), started by the test. The browser's part
//! is played over HTTP: the gateway sends it to the provider's login form,
//! the form is posted with a predefined user, the provider sends it back
//! with a code, and the gateway signs the user in with the role their
//! groups map to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aigw_ingress::sso_config::SsoArgs;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::{Options, TestEnv, free_port, wait_until};

/// The Python with `oidc-provider-mock` (`.tools/bin/python`, or
/// `AIGW_TEST_OIDC_PYTHON`).
fn python() -> PathBuf {
    match std::env::var_os("AIGW_TEST_OIDC_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python"),
    }
}

/// The provider process, stopped when dropped.
pub struct Provider {
    pub issuer: String,
    child: Child,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `oidc-provider-mock` with predefined users (JSON claims, each
/// with `sub`) and waits for its discovery document.
pub async fn start_provider(users: &[Value]) -> Provider {
    // Its readiness is read with reqwest, which needs the crypto provider.
    crate::harness::init_process();
    let port = free_port();
    let mut command = Command::new(python());
    command
        .args(["-m", "oidc_provider_mock", "--port", &port.to_string()])
        .args(["--require-nonce", "true"])
        .env("AUTHLIB_INSECURE_TRANSPORT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for u in users {
        command.args(["--user-claims", &u.to_string()]);
    }
    let child = command
        .spawn()
        .expect("oidc-provider-mock (scripts/test installs it)");
    let provider = Provider {
        issuer: format!("http://127.0.0.1:{port}"),
        child,
    };
    let discovery = format!("{}/.well-known/openid-configuration", provider.issuer);
    wait_until(Duration::from_secs(30), || {
        let url = discovery.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    provider
}

pub fn sso(issuer: &str) -> SsoArgs {
    SsoArgs {
        oidc_issuer: Some(issuer.into()),
        oidc_client_id: Some("aigw-admin-ui".into()),
        oidc_client_secret: Some(SecretString::from("mock-provider-client-secret")),
        oidc_redirect_url: Some("{base}/admin/auth/oidc/callback".into()),
        oidc_allowed_domains: "example.com".into(),
        oidc_role_map: "groups:aigw-admins=admin,groups:aigw-finance=billing_viewer".into(),
        session_cookie_secure: false,
        ..SsoArgs::default()
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")) && !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

#[tokio::test]
async fn sign_in_through_a_real_provider_maps_groups_to_a_role() {
    let provider = start_provider(&[
        json!({"sub": "fin", "email": "fin@example.com", "name": "Fin Ance", "groups": ["aigw-finance"]}),
        json!({"sub": "mallory", "email": "mallory@elsewhere.org", "groups": ["aigw-admins"]}),
    ])
    .await;
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        sso: sso(&provider.issuer),
        ..Options::default()
    })
    .await;
    let browser = no_redirects();

    let sign_in = async |sub: &str| -> reqwest::Response {
        let r = browser
            .get(env.url("/admin/auth/oidc/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let login_cookie = cookie(&r, "aigw_oidc_login");
        let authorize = location(&r);
        assert!(authorize.starts_with(&provider.issuer), "{authorize}");
        // The provider's login page, then its form posted for `sub`.
        let page = browser.get(&authorize).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Authorize"));
        let r = browser
            .post(&authorize)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("sub={sub}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
        let back = location(&r);
        assert!(
            back.starts_with(&env.url("/admin/auth/oidc/callback")),
            "{back}"
        );
        let q: HashMap<String, String> = reqwest::Url::parse(&back)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert!(q.contains_key("code"));
        browser
            .get(&back)
            .header("cookie", login_cookie)
            .send()
            .await
            .unwrap()
    };

    let r = sign_in("fin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/");
    let session = cookie(&r, "aigw_session");
    let me: Value = browser
        .get(env.url("/admin/api/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "fin@example.com");
    assert_eq!(me["name"], "Fin Ance");
    assert_eq!(me["roles"], json!([{ "role": "billing_viewer" }]));
    // A finance viewer reads billing, not providers.
    for (path, status) in [("/admin/api/billing", 200), ("/admin/api/providers", 403)] {
        let r = browser
            .get(env.url(path))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }

    // Another domain is refused, whatever its groups.
    let r = sign_in("mallory").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "domain_not_allowed");

    let r = env
        .admin(Method::GET, "/admin/api/sign-ins")
        .send()
        .await
        .unwrap();
    let history: Value = r.json().await.unwrap();
    let kinds: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["failed", "succeeded"]);
}

/// The admin UI's single sign-on in headless Chromium
/// (`tests/ui/sso.e2e.mjs`): through the provider's login page, each user
/// sees only the pages their role allows.
#[tokio::test]
async fn sso_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ui_tests = root.join("tests/ui");
    assert!(
        ui_tests.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/ui` (scripts/test does it)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let provider = start_provider(&[
        json!({"sub": "fin", "email": "fin@example.com", "name": "Fin", "groups": ["aigw-finance"]}),
        json!({"sub": "ada", "email": "ada@example.com", "name": "Ada", "groups": ["aigw-admins"]}),
    ])
    .await;
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        sso: sso(&provider.issuer),
        ..Options::default()
    })
    .await;
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(ui_tests.join("sso.e2e.mjs"))
            .current_dir(&ui_tests)
            .env("AIGW_URL", &env.base)
            .env("PROVIDER_URL", &provider.issuer)
            .env("CHROMIUM", &chromium)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the SSO browser test took more than 3 minutes")
    .expect("node runs");
    assert!(
        output.status.success(),
        "SSO browser test failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
