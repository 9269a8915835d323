//! CORS per side: `/v1` (and the other non-admin routes) answer the
//! origins of `AIGW_CORS_ORIGINS` (default `*`), `/admin/api` only those of
//! `AIGW_ADMIN_CORS_ORIGINS` (default none: same-origin only), preflights
//! included.

use reqwest::Method;

use crate::harness::{Options, TestEnv};

async fn cors_headers(env: &TestEnv, m: Method, path: &str, origin: &str) -> Option<String> {
    let mut r = env
        .http
        .request(m.clone(), env.url(path))
        .header("origin", origin);
    if m == Method::OPTIONS {
        r = r
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization");
    }
    let r = r.send().await.unwrap();
    r.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn cors_is_open_for_v1_and_same_origin_for_admin_by_default() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        ..Options::default()
    })
    .await;
    let o = "https://app.example.com";
    assert_eq!(
        cors_headers(&env, Method::OPTIONS, "/v1/chat/completions", o)
            .await
            .as_deref(),
        Some("*")
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/v1/models", o)
            .await
            .as_deref(),
        Some("*")
    );
    assert_eq!(
        cors_headers(&env, Method::OPTIONS, "/admin/api/keys", o).await,
        None
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/admin/api/keys", o).await,
        None
    );
}

#[tokio::test]
async fn cors_origins_are_configured_per_side() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        cors_origins: "https://app.example.com".into(),
        admin_cors_origins: "https://admin.example.com, https://ops.example.com".into(),
        ..Options::default()
    })
    .await;
    let (app, admin, evil) = (
        "https://app.example.com",
        "https://admin.example.com",
        "https://evil.example",
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/v1/models", app)
            .await
            .as_deref(),
        Some(app)
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/v1/models", evil).await,
        None
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/v1/models", admin).await,
        None
    );
    assert_eq!(
        cors_headers(&env, Method::OPTIONS, "/admin/api/keys", admin)
            .await
            .as_deref(),
        Some(admin)
    );
    assert_eq!(
        cors_headers(
            &env,
            Method::GET,
            "/admin/api/keys",
            "https://ops.example.com"
        )
        .await
        .as_deref(),
        Some("https://ops.example.com")
    );
    assert_eq!(
        cors_headers(&env, Method::GET, "/admin/api/keys", app).await,
        None
    );
    assert_eq!(
        cors_headers(&env, Method::OPTIONS, "/admin/api/keys", evil).await,
        None
    );
}
