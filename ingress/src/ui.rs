//! The admin web UI at `/admin/`: static HTML, CSS and JavaScript embedded in
//! the binary (no build step, no CDN). The pages hold no data; every data
//! call goes to `/admin/api` with the admin token the admin signs in with,
//! or with the session cookie of a single sign-on (and its CSRF token).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::ApiError;

/// Scripts, styles and connections only from this origin; no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

/// Every embedded asset: (file name, content type, body). The scripts are ES
/// modules importing each other by relative name (`./dom.js`): each must be
/// listed here (a test checks that every file in `ui/` is, and that every
/// import names one).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    ("app.js", JS, include_str!("../ui/app.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("format.js", JS, include_str!("../ui/format.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("forms.js", JS, include_str!("../ui/forms.js")),
    ("providers.js", JS, include_str!("../ui/providers.js")),
    ("keys.js", JS, include_str!("../ui/keys.js")),
    ("teams.js", JS, include_str!("../ui/teams.js")),
    ("limits.js", JS, include_str!("../ui/limits.js")),
    ("usage.js", JS, include_str!("../ui/usage.js")),
    ("requests.js", JS, include_str!("../ui/requests.js")),
    ("billing.js", JS, include_str!("../ui/billing.js")),
    ("jobs.js", JS, include_str!("../ui/jobs.js")),
    ("alerts.js", JS, include_str!("../ui/alerts.js")),
    ("signins.js", JS, include_str!("../ui/signins.js")),
    ("users.js", JS, include_str!("../ui/users.js")),
    ("routing.js", JS, include_str!("../ui/routing.js")),
    ("i18n.js", JS, include_str!("../ui/i18n.js")),
    ("charts.js", JS, include_str!("../ui/charts.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../ui/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

fn serve(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound {
            message: "Unknown path.".into(),
            code: "unknown_url",
        }
        .into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary; revalidate rather than serve stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// The public UI routes (`/admin`, `/admin/`, `/admin/{asset}`).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(index))
        .route("/admin/{asset}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn every_asset_is_served_with_the_csp() {
        for (name, content_type, _) in ASSETS {
            let r = serve(name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], *content_type);
            assert!(
                r.headers()[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }

    fn served(name: &str) -> bool {
        ASSETS.iter().any(|(n, _, _)| *n == name)
    }

    /// A file added to `ui/` but not to `ASSETS` would be a 404 in the
    /// browser: the module importing it, and so the whole UI, would fail.
    #[test]
    fn every_file_of_the_ui_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(served(&name), "ui/{name} is not in ASSETS");
            files += 1;
        }
        assert_eq!(files, ASSETS.len(), "ASSETS lists a file ui/ does not have");
    }

    /// Every `import ... from './x.js'` names a served module.
    #[test]
    fn every_imported_module_is_served() {
        let mut imports = 0;
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for piece in body.split("from './").skip(1) {
                let module = piece.split('\'').next().unwrap();
                assert!(
                    served(module),
                    "{name} imports ./{module}, which is not served"
                );
                imports += 1;
            }
        }
        assert!(
            imports > 10,
            "the modules import each other ({imports} imports)"
        );
        let index = ASSETS[0].2;
        assert!(index.contains(r#"<script type="module" src="app.js">"#));
    }
}
