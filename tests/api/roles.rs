//! Admin users and roles: every role against every admin route (from the
//! OpenAPI document, against an expectation table of this test's own, so a
//! route added without a role decision fails here); team admins confined
//! to their team; personal tokens (shown once, stored hashed, bounded,
//! revocable, expiring, found by any replica); the bootstrap token turned
//! off; the acting user in events. CORS is in `cors`.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Options, TestEnv};

async fn call(
    env: &TestEnv,
    token: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_at(env, &env.base, token, m, path, body).await
}

async fn call_at(
    env: &TestEnv,
    base: &str,
    token: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = env
        .http
        .request(m, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn boot(env: &TestEnv, m: Method, path: &str, body: Value) -> Value {
    let (status, v) = call(env, crate::harness::ADMIN_TOKEN, m, path, Some(body)).await;
    assert!(status == 200 || status == 201, "{path}: {status} {v}");
    v
}

/// Creates a user with `roles` and a token; returns (user id, token).
async fn user_with(env: &TestEnv, name: &str, roles: Value) -> (String, String) {
    let email = format!("{}@example.com", name.to_lowercase());
    let u = boot(
        env,
        Method::POST,
        "/admin/api/users",
        json!({"name": name, "email": email, "roles": roles}),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    let t = boot(
        env,
        Method::POST,
        &format!("/admin/api/users/{id}/tokens"),
        json!({"name": "test"}),
    )
    .await;
    let token = t["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("aigwu_"), "{t}");
    (id, token)
}

struct World {
    team_a: String,
    team_b: String,
    project_a: String,
    project_b: String,
    key_a: String,
    key_b: String,
}

async fn world(env: &TestEnv) -> World {
    let team_a = boot(env, Method::POST, "/admin/api/teams", json!({"name": "a"})).await;
    let team_b = boot(env, Method::POST, "/admin/api/teams", json!({"name": "b"})).await;
    let project_a = boot(
        env,
        Method::POST,
        "/admin/api/projects",
        json!({"name": "pa", "team_id": team_a["id"]}),
    )
    .await;
    let project_b = boot(
        env,
        Method::POST,
        "/admin/api/projects",
        json!({"name": "pb", "team_id": team_b["id"]}),
    )
    .await;
    let key_a = boot(
        env,
        Method::POST,
        "/admin/api/keys",
        json!({"name": "ka", "project_id": project_a["id"]}),
    )
    .await;
    let key_b = boot(
        env,
        Method::POST,
        "/admin/api/keys",
        json!({"name": "kb", "project_id": project_b["id"]}),
    )
    .await;
    let s = |v: &Value| v["id"].as_str().unwrap().to_string();
    World {
        team_a: s(&team_a),
        team_b: s(&team_b),
        project_a: s(&project_a),
        project_b: s(&project_b),
        key_a: s(&key_a),
        key_b: s(&key_b),
    }
}

const ALL: &[&str] = &["owner", "admin", "team_admin", "viewer", "billing_viewer"];
const OWNER: &[&str] = &["owner"];
const MANAGE: &[&str] = &["owner", "admin"];
const READ: &[&str] = &["owner", "admin", "viewer"];
const FINANCE: &[&str] = &["owner", "admin", "viewer", "billing_viewer", "team_admin"];
const FINANCE_ALL: &[&str] = &["owner", "admin", "viewer", "billing_viewer"];
const UNITS_WRITE: &[&str] = &["owner", "admin", "team_admin"];

/// This test's own statement of who may use each admin route (written
/// apart from the server's table, which it checks).
fn expected(m: &str, path: &str) -> Option<&'static [&'static str]> {
    let allowed = match (m, path) {
        ("GET", "/admin/api/me") => ALL,
        ("GET", "/admin/api/sign-ins") => MANAGE,
        ("GET" | "POST", "/admin/api/users")
        | ("GET" | "PATCH" | "DELETE", "/admin/api/users/{id}")
        | ("PUT", "/admin/api/users/{id}/roles")
        | ("GET" | "POST", "/admin/api/users/{id}/tokens")
        | ("DELETE", "/admin/api/users/{id}/tokens/{token_id}") => OWNER,
        ("GET", "/admin/api/providers" | "/admin/api/providers/{id}")
        | ("GET", "/admin/api/providers/{id}/health" | "/admin/api/health")
        | ("GET", "/admin/api/unpriced" | "/admin/api/presets" | "/admin/api/quarantine")
        | ("GET", "/admin/api/aliases" | "/admin/api/aliases/{name}")
        | ("GET", "/admin/api/jobs" | "/admin/api/jobs/{id}") => READ,
        ("POST", "/admin/api/providers" | "/admin/api/providers/{id}/test")
        | ("PATCH" | "DELETE", "/admin/api/providers/{id}")
        | ("POST", "/admin/api/aliases")
        | ("PATCH" | "DELETE", "/admin/api/aliases/{name}")
        | ("POST", "/admin/api/audit")
        | ("DELETE", "/admin/api/jobs/{id}")
        | ("POST", "/admin/api/teams")
        | ("PATCH" | "DELETE", "/admin/api/teams/{id}") => MANAGE,
        (
            "GET",
            "/admin/api/stats"
            | "/admin/api/billing"
            | "/admin/api/requests"
            | "/admin/api/usage/requests"
            | "/admin/api/alerts",
        ) => FINANCE,
        ("GET", "/admin/api/usage" | "/admin/api/usage/requests/{id}") => FINANCE_ALL,
        ("GET", "/admin/api/keys" | "/admin/api/keys/{id}" | "/admin/api/keys/{id}/events")
        | ("GET", "/admin/api/teams" | "/admin/api/teams/{id}")
        | ("GET", "/admin/api/projects" | "/admin/api/projects/{id}") => FINANCE,
        ("POST", "/admin/api/keys" | "/admin/api/projects")
        | ("PATCH" | "DELETE", "/admin/api/keys/{id}" | "/admin/api/projects/{id}")
        | (
            "POST",
            "/admin/api/keys/{id}/topup"
            | "/admin/api/keys/{id}/rotate"
            | "/admin/api/keys/{id}/revoke",
        ) => UNITS_WRITE,
        _ => return None,
    };
    Some(allowed)
}

#[tokio::test]
async fn every_role_against_every_admin_route() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let w = world(&env).await;
    let mut principals = vec![];
    for role in ALL {
        let roles = match *role {
            "team_admin" => json!([{"role": "team_admin", "team_id": w.team_a}]),
            r => json!([{ "role": r }]),
        };
        let (_, token) = user_with(&env, &format!("u-{role}"), roles).await;
        principals.push((Some(*role), token));
    }
    let (_, nobody_token) = user_with(&env, "nobody", json!([])).await;
    principals.push((None, nobody_token));
    let (target, _) = user_with(&env, "target", json!([{"role": "viewer"}])).await;

    let doc: Value = env
        .http
        .get(env.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.starts_with("/admin/api/") {
            continue;
        }
        for m in item.as_object().unwrap().keys() {
            let m = m.to_uppercase();
            let allowed = expected(&m, template)
                .unwrap_or_else(|| panic!("no role decision in this test for {m} {template}"));
            // Ids that exist nowhere (nothing is changed), except another
            // user's for the user routes; a team admin's key in the query.
            let path = template
                .replace(
                    "{id}",
                    &if template.starts_with("/admin/api/users/") {
                        target.clone()
                    } else {
                        Uuid::now_v7().to_string()
                    },
                )
                .replace("{token_id}", &Uuid::now_v7().to_string())
                .replace("{name}", "no-such-alias");
            let path = format!("{path}?key={}&key_id={}", w.key_a, w.key_a);
            let body = (m != "GET" && m != "DELETE").then(|| json!({"not_a_field": true}));
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            for (role, token) in &principals {
                let (status, v) = call(&env, token, method.clone(), &path, body.clone()).await;
                let refused = status == 403 && v["error"]["code"] == "role_forbidden";
                // Anyone signed in may ask who they are, roles or none.
                let may = (m == "GET" && template == "/admin/api/me")
                    || role.is_some_and(|r| allowed.contains(&r));
                assert_eq!(refused, !may, "{role:?} {m} {template}: {status} {v}");
                assert!(
                    status < 500 && status != 401,
                    "{role:?} {m} {path}: {status} {v}"
                );
                if refused {
                    let message = v["error"]["message"].as_str().unwrap();
                    assert!(message.contains(role.unwrap_or("no role")), "{message}");
                    assert!(message.contains(template.as_str()), "{message}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 50 * principals.len(), "{checked}");
}

#[tokio::test]
async fn a_team_admin_sees_and_changes_only_their_team() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let w = world(&env).await;
    let (tess, token) = user_with(
        &env,
        "Tess",
        json!([{"role": "team_admin", "team_id": w.team_a}]),
    )
    .await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, keys) = call(&env, &token, Method::GET, "/admin/api/keys", None).await;
    assert_eq!(ids(&keys), vec![w.key_a.clone()]);
    let (_, projects) = call(&env, &token, Method::GET, "/admin/api/projects", None).await;
    assert_eq!(ids(&projects), vec![w.project_a.clone()]);
    let (_, teams) = call(&env, &token, Method::GET, "/admin/api/teams", None).await;
    assert_eq!(ids(&teams), vec![w.team_a.clone()]);

    // Other teams' ids are not found; their own are.
    for path in [
        format!("/admin/api/keys/{}", w.key_b),
        format!("/admin/api/projects/{}", w.project_b),
        format!("/admin/api/teams/{}", w.team_b),
        format!("/admin/api/keys/{}/events", w.key_b),
    ] {
        let (status, v) = call(&env, &token, Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
    let (status, _) = call(
        &env,
        &token,
        Method::DELETE,
        &format!("/admin/api/keys/{}", w.key_b),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &env,
        &token,
        Method::GET,
        &format!("/admin/api/keys/{}", w.key_a),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Keys stay in the team's projects; projects in the team.
    let (status, v) = call(
        &env,
        &token,
        Method::POST,
        "/admin/api/keys",
        Some(json!({"name": "loose"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("team_scope")),
        "{v}"
    );
    let (status, v) = call(
        &env,
        &token,
        Method::POST,
        "/admin/api/keys",
        Some(json!({"name": "elsewhere", "project_id": w.project_b})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = call(
        &env,
        &token,
        Method::PATCH,
        &format!("/admin/api/keys/{}", w.key_a),
        Some(json!({"project_id": w.project_b})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, mine) = call(
        &env,
        &token,
        Method::POST,
        "/admin/api/keys",
        Some(json!({"name": "mine", "project_id": w.project_a})),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    let (status, v) = call(
        &env,
        &token,
        Method::POST,
        "/admin/api/projects",
        Some(json!({"name": "pb2", "team_id": w.team_b})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = call(
        &env,
        &token,
        Method::POST,
        "/admin/api/projects",
        Some(json!({"name": "pa2", "team_id": w.team_a})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // Reports only for their team's keys.
    for path in [
        "/admin/api/stats".to_string(),
        format!("/admin/api/stats?key={}", w.key_b),
        format!("/admin/api/usage/requests?key_id={}", w.key_b),
        format!("/admin/api/alerts?target={}", w.team_b),
    ] {
        let (status, v) = call(&env, &token, Method::GET, &path, None).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("team_scope")),
            "{path}: {v}"
        );
    }
    for path in [
        format!("/admin/api/stats?key={}", w.key_a),
        format!("/admin/api/billing?key={}", w.key_a),
        format!("/admin/api/alerts?target={}", w.team_a),
        format!("/admin/api/alerts?target={}", w.project_a),
    ] {
        let (status, v) = call(&env, &token, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {v}");
    }

    // The key's history names the user who made it.
    let (_, events) = call(
        &env,
        crate::harness::ADMIN_TOKEN,
        Method::GET,
        &format!("/admin/api/keys/{}/events", mine["id"].as_str().unwrap()),
        None,
    )
    .await;
    let actor = events["data"][0]["actor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(actor, format!("user:{tess} (Tess)"), "{events}");
}

#[tokio::test]
async fn personal_tokens_are_shown_once_bounded_and_revocable_on_every_replica() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let (vic, token) = user_with(&env, "Vic", json!([{"role": "viewer"}])).await;
    let (status, me) = call(&env, &token, Method::GET, "/admin/api/me", None).await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], vic.as_str());
    assert_eq!(me["roles"], json!([{"role": "viewer"}]));
    assert_eq!(me["email"], "vic@example.com");
    assert_eq!(me["actor"], format!("user:{vic} (Vic)"));

    // The secret is in no listing and no stored event.
    let (_, list) = call(
        &env,
        &token,
        Method::GET,
        &format!("/admin/api/users/{vic}/tokens"),
        None,
    )
    .await;
    assert!(!list.to_string().contains(&token), "{list}");
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE $1")
        .bind(format!("%{}%", &token[6..]))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0);

    // A token made on one replica works at once on another.
    let other = env.start_ingress().await;
    let t = boot(
        &env,
        Method::POST,
        &format!("/admin/api/users/{vic}/tokens"),
        json!({"name": "ci"}),
    )
    .await;
    let fresh = t["token"].as_str().unwrap();
    let (status, _) = call_at(&env, &other, fresh, Method::GET, "/admin/api/me", None).await;
    assert_eq!(status, 200);

    // Their own tokens, not anyone else's.
    let (owner, _) = user_with(&env, "Olga", json!([{"role": "owner"}])).await;
    let (status, own) = call(
        &env,
        &token,
        Method::POST,
        &format!("/admin/api/users/{vic}/tokens"),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    let (status, v) = call(
        &env,
        &token,
        Method::POST,
        &format!("/admin/api/users/{owner}/tokens"),
        Some(json!({"name": "theirs"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("role_forbidden")),
        "{v}"
    );

    // Expiry in the past or too far, and the live-token bound.
    for expires_at in ["2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
        let (status, _) = call(
            &env,
            &token,
            Method::POST,
            &format!("/admin/api/users/{vic}/tokens"),
            Some(json!({"name": "x", "expires_at": expires_at})),
        )
        .await;
        assert_eq!(status, 400);
    }
    let mut last = 0;
    for i in 0..25 {
        let (status, _) = call(
            &env,
            crate::harness::ADMIN_TOKEN,
            Method::POST,
            &format!("/admin/api/users/{vic}/tokens"),
            Some(json!({"name": format!("t{i}")})),
        )
        .await;
        last = status;
        if status != 201 {
            break;
        }
    }
    assert_eq!(last, 409);

    // Revoked: refused on both replicas.
    let own_id = own["id"].as_str().unwrap();
    let own_secret = own["token"].as_str().unwrap();
    let (status, v) = call(
        &env,
        &token,
        Method::DELETE,
        &format!("/admin/api/users/{vic}/tokens/{own_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["revoked_at"].is_string());
    for base in [env.base.clone(), other.clone()] {
        crate::harness::wait_until(std::time::Duration::from_secs(5), || {
            let (env, base) = (&env, base.clone());
            async move {
                call_at(env, &base, own_secret, Method::GET, "/admin/api/me", None)
                    .await
                    .0
                    == 401
            }
        })
        .await;
    }

    // Disabled: none of their tokens works.
    boot(
        &env,
        Method::DELETE,
        &format!("/admin/api/users/{vic}"),
        json!({}),
    )
    .await;
    let (status, _) = call(&env, &token, Method::GET, "/admin/api/me", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn users_are_validated_and_the_last_owner_stays() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let long = "x".repeat(129);
    let too_many: Vec<Value> = (0..17).map(|_| json!({"role": "viewer"})).collect();
    for body in [
        json!({"name": long, "email": "a@b.c"}),
        json!({"name": "a", "email": "not-an-email"}),
        json!({"name": "a", "email": format!("{}@b.c", "x".repeat(260))}),
        json!({"name": "a\u{0}b", "email": "a@b.c"}),
        json!({"name": "a", "email": "a@b.c", "roles": [{"role": "root"}]}),
        json!({"name": "a", "email": "a@b.c", "roles": [{"role": "team_admin"}]}),
        json!({"name": "a", "email": "a@b.c", "roles": [{"role": "team_admin", "team_id": Uuid::now_v7()}]}),
        json!({"name": "a", "email": "a@b.c", "roles": [{"role": "viewer", "team_id": Uuid::now_v7()}]}),
        json!({"name": "a", "email": "a@b.c", "roles": too_many}),
        json!({"name": "a", "email": "a@b.c", "password": "x"}),
    ] {
        let (status, v) = call(
            &env,
            crate::harness::ADMIN_TOKEN,
            Method::POST,
            "/admin/api/users",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {v}");
    }
    let (olga, _) = user_with(&env, "Olga", json!([{"role": "owner"}])).await;
    let (status, v) = call(
        &env,
        crate::harness::ADMIN_TOKEN,
        Method::POST,
        "/admin/api/users",
        Some(json!({"name": "O2", "email": "OLGA@example.com"})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = call(
        &env,
        crate::harness::ADMIN_TOKEN,
        Method::PUT,
        &format!("/admin/api/users/{olga}/roles"),
        Some(json!({"roles": [{"role": "viewer"}]})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    let (status, _) = call(
        &env,
        crate::harness::ADMIN_TOKEN,
        Method::DELETE,
        &format!("/admin/api/users/{olga}"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    // With a second owner, the first may step down; every change is an event.
    let (omar, _) = user_with(&env, "Omar", json!([{"role": "owner"}])).await;
    let v = boot(
        &env,
        Method::PUT,
        &format!("/admin/api/users/{olga}/roles"),
        json!({"roles": [{"role": "admin"}, {"role": "billing_viewer"}]}),
    )
    .await;
    assert_eq!(
        v["roles"],
        json!([{"role": "admin"}, {"role": "billing_viewer"}])
    );
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'admin_user' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&olga)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            "UserCreated",
            "TokenIssued",
            "RoleGranted",
            "RoleGranted",
            "RoleRevoked"
        ]
    );
    let _ = omar;
}

#[tokio::test]
async fn the_bootstrap_token_can_be_turned_off_once_an_owner_exists() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let mut args = env.ingress_args();
    args.admin_token_disabled = true;
    let refused = aigw_ingress::prepare(&env.common, &args).await;
    assert!(
        matches!(
            refused,
            Err(aigw_ingress::IngressError::Runtime(
                aigw_runtime::RuntimeError::Config(_)
            ))
        ),
        "started without an owner"
    );
    let (_, owner_token) = user_with(&env, "Olga", json!([{"role": "owner"}])).await;
    env.options.admin_token_disabled = true;
    let locked = env.start_ingress().await;
    let (status, _) = call_at(
        &env,
        &locked,
        crate::harness::ADMIN_TOKEN,
        Method::GET,
        "/admin/api/me",
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, me) = call_at(
        &env,
        &locked,
        &owner_token,
        Method::GET,
        "/admin/api/keys",
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
}
