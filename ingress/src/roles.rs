//! Who may use which admin route: one table, [`ROUTES`], mapping every
//! admin route (method and path template) to the roles allowed and, for
//! team admins, how the route is confined to their teams.
//!
//! Invariants:
//! - a route missing from the table is refused to everyone (403), and the
//!   tests fail on any route of the OpenAPI document without an entry;
//! - a refusal for the role is 403 `role_forbidden` naming the roles and
//!   the route; a team admin naming another team's key, project or team in
//!   the path gets 404 (as if it did not exist: ids of other teams are not
//!   confirmed), and a report that must be confined to their team but names
//!   nothing of it is 403 `team_scope`;
//! - a principal holding any role the route allows other than `team_admin`
//!   is unconfined on it; holding only `team_admin` roles, they are
//!   confined to those teams ([`TeamScope`], which list and create
//!   handlers apply to what they return and accept).

use std::collections::{BTreeSet, HashMap};

use aigw_events::Role;
use aigw_events::key::KeySettings;
use axum::extract::Query;
use axum::http::{Method, Uri};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// A role as the table names it (a team admin of any team; the user named
/// by the path, for their own tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Owner,
    Admin,
    TeamAdmin,
    Viewer,
    BillingViewer,
    /// The user whose `{id}` is in the path.
    Myself,
    /// Anyone signed in, whatever their roles (none included).
    Signed,
}

/// How a route confines a team admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not confined (or not open to team admins at all).
    None,
    /// The path's `{id}` is a key of the team.
    KeyPath,
    /// The path's `{id}` is a project of the team.
    ProjectPath,
    /// The path's `{id}` is the team.
    TeamPath,
    /// The query parameter must name a key of the team.
    KeyQuery(&'static str),
    /// `key` must name a key of the team, or `target` a key, project or
    /// team of it.
    AlertQuery,
    /// The handler filters what it lists and checks what it is sent.
    Handler,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Decision {
    pub method: Method,
    pub path: &'static str,
    pub grants: &'static [Grant],
    pub scope: Scope,
}

use Grant::*;

const ANYONE: &[Grant] = &[Signed];
const OWNER: &[Grant] = &[Owner];
const OWNER_OR_SELF: &[Grant] = &[Owner, Myself];
const MANAGE: &[Grant] = &[Owner, Admin];
const READ: &[Grant] = &[Owner, Admin, Viewer];
/// Reports: usage, billing, alerts (a team admin: their team's only).
const REPORTS: &[Grant] = &[Owner, Admin, Viewer, BillingViewer, TeamAdmin];
/// Reports that cannot be confined to one team.
const REPORTS_ALL: &[Grant] = &[Owner, Admin, Viewer, BillingViewer];
/// Reading teams, projects and keys (names, limits, budgets).
const UNITS_READ: &[Grant] = &[Owner, Admin, Viewer, BillingViewer, TeamAdmin];
/// Changing projects and keys.
const UNITS_WRITE: &[Grant] = &[Owner, Admin, TeamAdmin];

const fn d(method: Method, path: &'static str, grants: &'static [Grant], scope: Scope) -> Decision {
    Decision {
        method,
        path,
        grants,
        scope,
    }
}

/// Every admin route and who may use it.
pub static ROUTES: &[Decision] = &[
    d(Method::GET, "/admin/api/me", ANYONE, Scope::None),
    d(Method::GET, "/admin/api/sign-ins", MANAGE, Scope::None),
    // Users and roles.
    d(Method::GET, "/admin/api/users", OWNER, Scope::None),
    d(Method::POST, "/admin/api/users", OWNER, Scope::None),
    d(Method::GET, "/admin/api/users/{id}", OWNER, Scope::None),
    d(Method::PATCH, "/admin/api/users/{id}", OWNER, Scope::None),
    d(Method::DELETE, "/admin/api/users/{id}", OWNER, Scope::None),
    d(
        Method::PUT,
        "/admin/api/users/{id}/roles",
        OWNER,
        Scope::None,
    ),
    d(
        Method::GET,
        "/admin/api/users/{id}/tokens",
        OWNER_OR_SELF,
        Scope::None,
    ),
    d(
        Method::POST,
        "/admin/api/users/{id}/tokens",
        OWNER_OR_SELF,
        Scope::None,
    ),
    d(
        Method::DELETE,
        "/admin/api/users/{id}/tokens/{token_id}",
        OWNER_OR_SELF,
        Scope::None,
    ),
    // Providers, their health, presets and aliases.
    d(Method::GET, "/admin/api/providers", READ, Scope::None),
    d(Method::POST, "/admin/api/providers", MANAGE, Scope::None),
    d(Method::GET, "/admin/api/providers/{id}", READ, Scope::None),
    d(
        Method::PATCH,
        "/admin/api/providers/{id}",
        MANAGE,
        Scope::None,
    ),
    d(
        Method::DELETE,
        "/admin/api/providers/{id}",
        MANAGE,
        Scope::None,
    ),
    d(
        Method::POST,
        "/admin/api/providers/{id}/test",
        MANAGE,
        Scope::None,
    ),
    d(
        Method::GET,
        "/admin/api/providers/{id}/health",
        READ,
        Scope::None,
    ),
    d(Method::GET, "/admin/api/health", READ, Scope::None),
    d(Method::GET, "/admin/api/unpriced", READ, Scope::None),
    d(Method::GET, "/admin/api/presets", READ, Scope::None),
    d(Method::GET, "/admin/api/aliases", READ, Scope::None),
    d(Method::POST, "/admin/api/aliases", MANAGE, Scope::None),
    d(Method::GET, "/admin/api/aliases/{name}", READ, Scope::None),
    d(
        Method::PATCH,
        "/admin/api/aliases/{name}",
        MANAGE,
        Scope::None,
    ),
    d(
        Method::DELETE,
        "/admin/api/aliases/{name}",
        MANAGE,
        Scope::None,
    ),
    // Reports.
    d(
        Method::GET,
        "/admin/api/stats",
        REPORTS,
        Scope::KeyQuery("key"),
    ),
    d(
        Method::GET,
        "/admin/api/billing",
        REPORTS,
        Scope::KeyQuery("key"),
    ),
    d(
        Method::GET,
        "/admin/api/requests",
        REPORTS,
        Scope::KeyQuery("key"),
    ),
    d(Method::GET, "/admin/api/usage", REPORTS_ALL, Scope::None),
    d(
        Method::GET,
        "/admin/api/usage/requests",
        REPORTS,
        Scope::KeyQuery("key_id"),
    ),
    d(
        Method::GET,
        "/admin/api/usage/requests/{id}",
        REPORTS_ALL,
        Scope::None,
    ),
    d(Method::GET, "/admin/api/alerts", REPORTS, Scope::AlertQuery),
    d(Method::POST, "/admin/api/audit", MANAGE, Scope::None),
    d(Method::GET, "/admin/api/quarantine", READ, Scope::None),
    // Keys.
    d(Method::GET, "/admin/api/keys", UNITS_READ, Scope::Handler),
    d(Method::POST, "/admin/api/keys", UNITS_WRITE, Scope::Handler),
    d(
        Method::GET,
        "/admin/api/keys/{id}",
        UNITS_READ,
        Scope::KeyPath,
    ),
    d(
        Method::PATCH,
        "/admin/api/keys/{id}",
        UNITS_WRITE,
        Scope::KeyPath,
    ),
    d(
        Method::DELETE,
        "/admin/api/keys/{id}",
        UNITS_WRITE,
        Scope::KeyPath,
    ),
    d(
        Method::POST,
        "/admin/api/keys/{id}/topup",
        UNITS_WRITE,
        Scope::KeyPath,
    ),
    d(
        Method::POST,
        "/admin/api/keys/{id}/rotate",
        UNITS_WRITE,
        Scope::KeyPath,
    ),
    d(
        Method::POST,
        "/admin/api/keys/{id}/revoke",
        UNITS_WRITE,
        Scope::KeyPath,
    ),
    d(
        Method::GET,
        "/admin/api/keys/{id}/events",
        UNITS_READ,
        Scope::KeyPath,
    ),
    // Teams and projects.
    d(Method::GET, "/admin/api/teams", UNITS_READ, Scope::Handler),
    d(Method::POST, "/admin/api/teams", MANAGE, Scope::None),
    d(
        Method::GET,
        "/admin/api/teams/{id}",
        UNITS_READ,
        Scope::TeamPath,
    ),
    d(Method::PATCH, "/admin/api/teams/{id}", MANAGE, Scope::None),
    d(Method::DELETE, "/admin/api/teams/{id}", MANAGE, Scope::None),
    d(
        Method::GET,
        "/admin/api/projects",
        UNITS_READ,
        Scope::Handler,
    ),
    d(
        Method::POST,
        "/admin/api/projects",
        UNITS_WRITE,
        Scope::Handler,
    ),
    d(
        Method::GET,
        "/admin/api/projects/{id}",
        UNITS_READ,
        Scope::ProjectPath,
    ),
    d(
        Method::PATCH,
        "/admin/api/projects/{id}",
        UNITS_WRITE,
        Scope::ProjectPath,
    ),
    d(
        Method::DELETE,
        "/admin/api/projects/{id}",
        UNITS_WRITE,
        Scope::ProjectPath,
    ),
    // Jobs.
    d(Method::GET, "/admin/api/jobs", READ, Scope::None),
    d(Method::GET, "/admin/api/jobs/{id}", READ, Scope::None),
    d(Method::DELETE, "/admin/api/jobs/{id}", MANAGE, Scope::None),
];

/// The table's row for a route, if it has one.
pub fn decision(method: &Method, path: &str) -> Option<&'static Decision> {
    ROUTES.iter().find(|d| d.method == method && d.path == path)
}

/// Which teams a principal is confined to on the route being served
/// (`None`: every team). Handlers of [`Scope::Handler`] routes apply it.
#[derive(Debug, Clone, Default)]
pub struct TeamScope(pub Option<BTreeSet<Uuid>>);

impl TeamScope {
    pub fn allows(&self, team: Option<Uuid>) -> bool {
        match &self.0 {
            None => true,
            Some(teams) => team.is_some_and(|t| teams.contains(&t)),
        }
    }

    pub fn is_confined(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a key with `settings` is visible in this scope.
    pub fn allows_key(&self, state: &AppState, settings: &KeySettings) -> bool {
        !self.is_confined() || self.allows(settings_team(state, settings))
    }

    /// A team admin's key must be (and stay) in a project of their team.
    pub fn check_key(&self, state: &AppState, settings: &KeySettings) -> Result<(), ApiError> {
        if self.allows_key(state, settings) {
            return Ok(());
        }
        Err(ApiError::Forbidden {
            message:
                "A team admin's keys must belong to a project of their team: set 'project_id'."
                    .into(),
            code: "team_scope",
        })
    }
}

/// The team of the project a key's settings name, if any.
fn settings_team(state: &AppState, settings: &KeySettings) -> Option<Uuid> {
    state
        .registry
        .project(settings.project_id?)
        .map(|p| p.state.team_id)
}

fn grants(role: &Role) -> Grant {
    match role {
        Role::Owner => Owner,
        Role::Admin => Admin,
        Role::TeamAdmin { .. } => TeamAdmin,
        Role::Viewer => Viewer,
        Role::BillingViewer => BillingViewer,
    }
}

/// The value of the path's `{name}` segment, matching `path` against the
/// template `template` segment by segment.
fn path_param<'a>(template: &str, path: &'a str, name: &str) -> Option<&'a str> {
    let want = format!("{{{name}}}");
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == want)
        .map(|(_, v)| v)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let Query(mut pairs) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    pairs.remove(name)
}

fn nowhere() -> ApiError {
    ApiError::NotFound {
        message: "Not found.".into(),
        code: "not_found",
    }
}

fn outside(what: &str) -> ApiError {
    ApiError::Forbidden {
        message: format!("A team admin sees only their team's reports: name one of its {what}."),
        code: "team_scope",
    }
}

/// The team of a key (through its project), if any.
fn key_team(state: &AppState, id: Uuid) -> Option<Uuid> {
    let key = state.registry.key(id)?;
    state.registry.lineage(&key).ok()?.team_id()
}

fn project_team(state: &AppState, id: Uuid) -> Option<Uuid> {
    state.registry.project(id).map(|p| p.state.team_id)
}

/// Decides whether `principal` may call `method uri`, served by the route
/// template `template`; returns the scope it runs in.
pub fn authorize(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    template: &str,
    uri: &Uri,
) -> Result<TeamScope, ApiError> {
    let path = uri.path();
    let Some(row) = decision(method, template) else {
        return Err(ApiError::Forbidden {
            message: format!("No role may use {method} {template}: it has no role decision."),
            code: "role_forbidden",
        });
    };
    if row.grants.contains(&Signed) {
        return Ok(TeamScope(None));
    }
    let myself = row.grants.contains(&Myself)
        && principal.user_id.is_some_and(|me| {
            path_param(row.path, path, "id").and_then(|v| Uuid::parse_str(v).ok()) == Some(me)
        });
    let allowing: Vec<&Role> = principal
        .roles
        .iter()
        .filter(|r| row.grants.contains(&grants(r)))
        .collect();
    if allowing.is_empty() && !myself {
        let held = if principal.roles.is_empty() {
            "a user with no role".to_string()
        } else {
            let names: Vec<&str> = principal.roles.iter().map(Role::name).collect();
            format!("role {}", names.join(", "))
        };
        return Err(ApiError::Forbidden {
            message: format!("{held} may not use {method} {template}."),
            code: "role_forbidden",
        });
    }
    let confined = !myself && allowing.iter().all(|r| matches!(r, Role::TeamAdmin { .. }));
    if !confined {
        return Ok(TeamScope(None));
    }
    let teams: BTreeSet<Uuid> = allowing
        .iter()
        .filter_map(|r| match r {
            Role::TeamAdmin { team_id } => Some(*team_id),
            _ => None,
        })
        .collect();
    let scope = TeamScope(Some(teams));
    let id = || path_param(row.path, path, "id").and_then(|v| Uuid::parse_str(v).ok());
    let ok = match row.scope {
        Scope::None | Scope::Handler => return Ok(scope),
        Scope::KeyPath => id().is_some_and(|k| scope.allows(key_team(state, k))),
        Scope::ProjectPath => id().is_some_and(|p| scope.allows(project_team(state, p))),
        Scope::TeamPath => id().is_some_and(|t| scope.allows(Some(t))),
        Scope::KeyQuery(name) => {
            let key = query_param(uri, name).and_then(|v| Uuid::parse_str(&v).ok());
            if !key.is_some_and(|k| scope.allows(key_team(state, k))) {
                return Err(outside(&format!("keys with '{name}'")));
            }
            true
        }
        Scope::AlertQuery => {
            let key = query_param(uri, "key").and_then(|v| Uuid::parse_str(&v).ok());
            let target = query_param(uri, "target").and_then(|v| Uuid::parse_str(&v).ok());
            let key_ok = key.is_some_and(|k| scope.allows(key_team(state, k)));
            let target_ok = target.is_some_and(|t| {
                scope.allows(Some(t))
                    || scope.allows(project_team(state, t))
                    || scope.allows(key_team(state, t))
            });
            // Both given: both must be the team's.
            let fine = match (key, target) {
                (Some(_), Some(_)) => key_ok && target_ok,
                _ => key_ok || target_ok,
            };
            if !fine {
                return Err(outside(
                    "keys with 'key', or its keys, projects or team with 'target'",
                ));
            }
            true
        }
    };
    if ok { Ok(scope) } else { Err(nowhere()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_decision() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
            if a.grants.contains(&TeamAdmin) {
                assert_ne!(a.scope, Scope::None, "{} {} unconfined", a.method, a.path);
            }
        }
    }

    /// The document lists every route the router serves (see
    /// `openapi::tests`), so a route added without a role decision fails
    /// here; and no decision names a route that does not exist.
    #[test]
    fn every_admin_operation_has_a_decision_and_nothing_else() {
        let doc = crate::openapi::document().unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/admin/api/") {
                continue;
            }
            for method in item.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                assert!(
                    decision(&m, path).is_some(),
                    "no role decision for {m} {path}"
                );
                documented.insert((m.to_string(), path.clone()));
            }
        }
        let decided: BTreeSet<_> = ROUTES
            .iter()
            .map(|d| (d.method.to_string(), d.path.to_string()))
            .collect();
        assert_eq!(decided, documented);
    }

    #[test]
    fn path_params_are_read_by_position() {
        assert_eq!(
            path_param(
                "/admin/api/keys/{id}/rotate",
                "/admin/api/keys/x/rotate",
                "id"
            ),
            Some("x")
        );
        assert_eq!(
            path_param(
                "/admin/api/users/{id}/tokens/{token_id}",
                "/admin/api/users/a/tokens/b",
                "token_id"
            ),
            Some("b")
        );
        assert_eq!(path_param("/admin/api/keys", "/admin/api/keys", "id"), None);
        let uri: Uri = "/x?a=1&key=k%20x".parse().unwrap();
        assert_eq!(query_param(&uri, "key"), Some("k x".into()));
        assert_eq!(query_param(&"/x".parse().unwrap(), "key"), None);
    }
}
