//! Single sign-on to the admin UI: the authorization code flow with PKCE
//! against an OpenID provider served by the test (discovery, JWKS and a
//! token endpoint on wiremock, ID tokens signed with a P-256 key made per
//! test, so the negative cases can forge them), the session cookie, CSRF,
//! logout and the sign-in history.

use std::collections::HashMap;

use aigw_ingress::sso_config::SsoArgs;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{Options, TestEnv};

const CLIENT_ID: &str = "aigw-admin";
const CLIENT_SECRET: &str = "idp-client-secret-for-tests";

/// A signing key: its PKCS#8 document and its JWK.
struct SigningKey {
    pkcs8: Vec<u8>,
    jwk: Value,
}

fn signing_key(kid: &str) -> SigningKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65);
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    SigningKey { pkcs8, jwk }
}

fn sign(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
}

/// The provider: discovery and JWKS served; tokens answered per login.
struct Idp {
    server: MockServer,
    key: SigningKey,
}

impl Idp {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let key = signing_key("k1");
        let issuer = server.uri();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": [key.jwk] })))
            .mount(&server)
            .await;
        Self { server, key }
    }

    fn issuer(&self) -> String {
        self.server.uri()
    }

    /// Claims of a good ID token for `login`.
    fn claims(&self, login: &Login, email: &str, groups: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer(),
            "aud": CLIENT_ID,
            "sub": format!("sub-{email}"),
            "iat": now,
            "exp": now + 300,
            "nonce": login.nonce,
            "email": email,
            "email_verified": true,
            "name": "Ada Lovelace",
            "groups": groups,
        })
    }

    /// Answers the next code exchange with `id_token`, if the exchange
    /// proves the login's PKCE challenge and authenticates the client.
    async fn answer_next(&self, login: &Login, id_token: String) {
        let challenge = login.challenge.clone();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(move |r: &Request| {
                let body = String::from_utf8_lossy(&r.body);
                let form: HashMap<String, String> =
                    reqwest::Url::parse(&format!("http://form/?{body}"))
                        .map(|u| u.query_pairs().into_owned().collect())
                        .unwrap_or_default();
                let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                let proved =
                    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge;
                proved
                    && form.get("code").map(String::as_str) == Some("the-code")
                    && form.get("grant_type").map(String::as_str) == Some("authorization_code")
                    && r.headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(basic.as_str())
            })
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "at",
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            })))
            .up_to_n_times(1)
            .expect(1)
            .mount(&self.server)
            .await;
    }
}

fn sso(issuer: &str) -> SsoArgs {
    SsoArgs {
        oidc_issuer: Some(issuer.into()),
        oidc_client_id: Some(CLIENT_ID.into()),
        oidc_client_secret: Some(SecretString::from(CLIENT_SECRET)),
        oidc_redirect_url: Some("{base}/admin/auth/oidc/callback".into()),
        oidc_allowed_domains: "example.com".into(),
        oidc_role_map: "groups:aigw-admins=admin,groups:aigw-finance=billing_viewer".into(),
        session_cookie_secure: false,
        ..SsoArgs::default()
    }
}

async fn env_with(idp: &Idp) -> TestEnv {
    TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        sso: sso(&idp.issuer()),
        ..Options::default()
    })
    .await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A login begun at the gateway.
struct Login {
    cookie: String,
    state: String,
    nonce: String,
    challenge: String,
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

async fn begin(env: &TestEnv, idp: &Idp) -> Login {
    let r = browser()
        .get(env.url("/admin/auth/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/authorize?", idp.issuer()))
    );
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], env.url("/admin/auth/oidc/callback"));
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let set = set_cookie(&r, "aigw_oidc_login").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"));
    // The login's secrets are sealed, not readable in the cookie.
    assert!(!set.contains(&q["nonce"]) && !set.contains(&q["state"]));
    let cookie = set.split(';').next().unwrap().to_string();
    Login {
        cookie,
        state: q["state"].clone(),
        nonce: q["nonce"].clone(),
        challenge: q["code_challenge"].clone(),
    }
}

/// The browser coming back from the provider.
async fn come_back(env: &TestEnv, login: &Login) -> reqwest::Response {
    browser()
        .get(env.url(&format!(
            "/admin/auth/oidc/callback?code=the-code&state={}",
            login.state
        )))
        .header("cookie", &login.cookie)
        .header("user-agent", "sso-test-browser/1.0")
        .send()
        .await
        .unwrap()
}

/// A full login with `claims`; the session cookie (`name=value`).
async fn sign_in(env: &TestEnv, idp: &Idp, email: &str, groups: &[&str]) -> String {
    let login = begin(env, idp).await;
    idp.answer_next(
        &login,
        sign(&idp.key, "k1", &idp.claims(&login, email, groups)),
    )
    .await;
    let r = come_back(env, &login).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], "/admin/");
    let set = set_cookie(&r, "aigw_session").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
    set.split(';').next().unwrap().to_string()
}

async fn with_cookie(
    env: &TestEnv,
    cookie: &str,
    m: Method,
    path: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = browser().request(m, env.url(path)).header("cookie", cookie);
    if let Some(c) = csrf {
        r = r.header("x-aigw-csrf", c);
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn history(env: &TestEnv) -> Vec<Value> {
    let r = env
        .admin(Method::GET, "/admin/api/sign-ins?limit=200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sso_signs_in_with_the_mapped_role_and_csrf_guards_the_session() {
    let idp = Idp::start().await;
    let env = env_with(&idp).await;
    let own_origin = env.base.clone();

    let cookie = sign_in(&env, &idp, "ada@example.com", &["staff", "aigw-admins"]).await;
    let (status, me) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["via"], "session");
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["roles"], json!([{ "role": "admin" }]));
    let csrf = me["csrf_token"].as_str().unwrap().to_string();

    // An admin, not an owner: users are refused, keys allowed.
    let (status, _) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/users",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 403);

    // State-changing calls need the CSRF token and this origin.
    let body = json!({ "name": "from-the-ui" });
    let (status, e) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/api/keys",
        None,
        Some(&own_origin),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, e) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/api/keys",
        Some("wrong"),
        Some(&own_origin),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, e) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/api/keys",
        Some(&csrf),
        Some("https://evil.example"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, e) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/api/keys",
        Some(&csrf),
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, key) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/api/keys",
        Some(&csrf),
        Some(&own_origin),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    // Nothing refused above was made: exactly this key exists.
    let r = env
        .admin(Method::GET, "/admin/api/keys")
        .send()
        .await
        .unwrap();
    let keys: Value = r.json().await.unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);

    // The key's history names the signed-in user as its actor.
    let actors: Vec<(Value,)> = sqlx::query_as(
        "SELECT metadata::jsonb FROM events WHERE aggregate_type = 'key' AND aggregate_id = $1",
    )
    .bind(key["id"].as_str().unwrap())
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let actor = actors[0].0["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("user:") && actor.contains("Ada Lovelace"),
        "{actor}"
    );

    // A bearer token needs no CSRF token.
    let r = env
        .admin(Method::POST, "/admin/api/keys")
        .json(&json!({ "name": "automation" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // The sign-in is in the history with its client.
    let rows = history(&env).await;
    let ok = rows.iter().find(|r| r["kind"] == "succeeded").unwrap();
    assert_eq!(ok["email"], "ada@example.com");
    assert_eq!(ok["user_agent"], "sso-test-browser/1.0");
    assert_eq!(ok["ip"], "127.0.0.1");

    // At the next sign-in the role follows the provider's groups.
    let cookie2 = sign_in(&env, &idp, "ada@example.com", &["aigw-finance"]).await;
    let (_, me) = with_cookie(
        &env,
        &cookie2,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(me["roles"], json!([{ "role": "billing_viewer" }]));
    // The user exists once.
    let r = env
        .admin(Method::GET, "/admin/api/users")
        .send()
        .await
        .unwrap();
    let users: Value = r.json().await.unwrap();
    assert_eq!(users["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logout_and_disabling_end_sessions() {
    let idp = Idp::start().await;
    let env = env_with(&idp).await;
    let own_origin = env.base.clone();
    let cookie = sign_in(&env, &idp, "bob@example.com", &["aigw-admins"]).await;
    let (_, me) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    let csrf = me["csrf_token"].as_str().unwrap().to_string();

    // Logout without the CSRF token is refused, and the session lives on.
    let (status, _) = with_cookie(
        &env,
        &cookie,
        Method::POST,
        "/admin/auth/logout",
        None,
        Some(&own_origin),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);

    let r = browser()
        .post(env.url("/admin/auth/logout"))
        .header("cookie", &cookie)
        .header("x-aigw-csrf", &csrf)
        .header("origin", &own_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        set_cookie(&r, "aigw_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Disabling the user ends their other sessions.
    let cookie = sign_in(&env, &idp, "bob@example.com", &["aigw-admins"]).await;
    let (_, me) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    let user_id = me["user_id"].as_str().unwrap().to_string();
    let r = env
        .admin(Method::DELETE, &format!("/admin/api/users/{user_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = with_cookie(
        &env,
        &cookie,
        Method::GET,
        "/admin/api/me",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    // And a disabled user cannot sign in again.
    let login = begin(&env, &idp).await;
    idp.answer_next(
        &login,
        sign(
            &idp.key,
            "k1",
            &idp.claims(&login, "bob@example.com", &["aigw-admins"]),
        ),
    )
    .await;
    let r = come_back(&env, &login).await;
    assert_eq!(r.status(), 403);

    let rows = history(&env).await;
    let reasons: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert!(reasons.contains(&("ended", Some("logout"))), "{reasons:?}");
    assert!(
        reasons.contains(&("ended", Some("user_disabled"))),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("failed", Some("user_disabled"))),
        "{reasons:?}"
    );
}

/// One forged or unfit ID token and the reason it is refused for.
async fn refused(
    env: &TestEnv,
    idp: &Idp,
    forge: impl FnOnce(&Login, Value) -> String,
    reason: &str,
) {
    let login = begin(env, idp).await;
    let claims = idp.claims(&login, "eve@example.com", &["aigw-admins"]);
    idp.answer_next(&login, forge(&login, claims)).await;
    let r = come_back(env, &login).await;
    assert_eq!(r.status(), 403, "{reason}");
    assert!(set_cookie(&r, "aigw_session").is_none(), "{reason}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], reason);
}

#[tokio::test]
async fn forged_or_unfit_id_tokens_are_refused_and_recorded() {
    let idp = Idp::start().await;
    let env = env_with(&idp).await;
    let key = &idp.key;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["aud"] = json!("another-client");
            sign(key, "k1", &c)
        },
        "wrong_audience",
    )
    .await;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
            sign(key, "k1", &c)
        },
        "token_expired",
    )
    .await;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["nonce"] = json!("not-the-login's-nonce");
            sign(key, "k1", &c)
        },
        "bad_nonce",
    )
    .await;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["iss"] = json!("https://elsewhere.example.com");
            sign(key, "k1", &c)
        },
        "wrong_issuer",
    )
    .await;
    // Signed by a key the provider does not publish, under its key id.
    let forger = signing_key("k1");
    refused(&env, &idp, |_, c| sign(&forger, "k1", &c), "bad_signature").await;
    // A token with its payload changed after signing.
    refused(
        &env,
        &idp,
        |_, c| {
            let good = sign(key, "k1", &c);
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            let mut claims = c.clone();
            claims["groups"] = json!(["aigw-owners"]);
            parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
            parts.join(".")
        },
        "bad_signature",
    )
    .await;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["email"] = json!("eve@evil.example");
            sign(key, "k1", &c)
        },
        "domain_not_allowed",
    )
    .await;
    refused(
        &env,
        &idp,
        |_, mut c| {
            c["groups"] = json!(["staff"]);
            sign(key, "k1", &c)
        },
        "no_role",
    )
    .await;

    // A callback with another state, or without the login cookie.
    let login = begin(&env, &idp).await;
    let r = browser()
        .get(env.url("/admin/auth/oidc/callback?code=the-code&state=forged"))
        .header("cookie", &login.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = browser()
        .get(env.url(&format!(
            "/admin/auth/oidc/callback?code=the-code&state={}",
            login.state
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // No user was made, and every refusal is in the history with its reason.
    let r = env
        .admin(Method::GET, "/admin/api/users")
        .send()
        .await
        .unwrap();
    let users: Value = r.json().await.unwrap();
    assert!(users["data"].as_array().unwrap().is_empty());
    let rows = history(&env).await;
    let mut reasons: Vec<&str> = rows
        .iter()
        .filter(|r| r["kind"] == "failed")
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    let mut expected = vec![
        "bad_signature",
        "bad_signature",
        "bad_state",
        "bad_nonce",
        "domain_not_allowed",
        "login_expired",
        "no_role",
        "token_expired",
        "wrong_audience",
        "wrong_issuer",
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    // The history pages.
    let r = env
        .admin(Method::GET, "/admin/api/sign-ins?limit=3")
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let before = page["next_before"].as_i64().unwrap();
    let r = env
        .admin(
            Method::GET,
            &format!("/admin/api/sign-ins?limit=200&before={before}"),
        )
        .send()
        .await
        .unwrap();
    let rest: Value = r.json().await.unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), rows.len() - 3);
    let r = env
        .admin(Method::GET, "/admin/api/sign-ins?limit=100000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
