//! Settings of single sign-on (OpenID Connect) and of admin UI sessions,
//! and the group/claim to role map.
//!
//! Invariants: single sign-on is on only when issuer, client id, client
//! secret and redirect URL are all set (some but not all is refused at
//! start, and so is single sign-on without `AIGW_MASTER_KEY`, which seals
//! the login cookie); the role map and domain list are parsed at start,
//! an invalid entry naming itself.

use std::time::Duration;

use aigw_events::Role;
use aigw_runtime::RuntimeError;
use clap::Args;
use secrecy::SecretString;
use uuid::Uuid;

#[derive(Debug, Clone, Args)]
pub struct SsoArgs {
    /// The OpenID Connect issuer (`https://login.example.com/realms/x`);
    /// its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "AIGW_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The client id aigw is registered under at the provider.
    #[arg(long, env = "AIGW_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// The client secret (sent to the token endpoint only).
    #[arg(long, env = "AIGW_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<SecretString>,

    /// Where the provider sends the browser back: this gateway's
    /// `https://<host>/admin/auth/oidc/callback`.
    #[arg(long, env = "AIGW_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,

    /// Email domains allowed to sign in, comma-separated
    /// (`example.com,example.org`); empty: any domain.
    #[arg(long, env = "AIGW_OIDC_ALLOWED_DOMAINS", default_value = "")]
    pub oidc_allowed_domains: String,

    /// Roles from ID token claims, comma-separated `claim:value=role`
    /// entries (`groups:aigw-admins=admin,groups:finance=billing_viewer`,
    /// `groups:team-a=team_admin:<team id>`). The claim may be a string or a
    /// list of strings. At each sign-in the user's roles named in this map
    /// follow the provider (other roles, granted by an owner, stay); a user
    /// left with no role cannot sign in.
    #[arg(long, env = "AIGW_OIDC_ROLE_MAP", default_value = "")]
    pub oidc_role_map: String,

    /// Scopes asked for (`openid` is always asked).
    #[arg(long, env = "AIGW_OIDC_SCOPES", default_value = "openid email profile")]
    pub oidc_scopes: String,

    /// Session and login cookies carry `Secure` (sent over HTTPS only).
    /// Turn off only for plain-HTTP development.
    #[arg(long, env = "AIGW_SESSION_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub session_cookie_secure: bool,

    /// A session unused for this long ends.
    #[arg(long, env = "AIGW_SESSION_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,

    /// A session ends this long after sign-in, used or not.
    #[arg(long, env = "AIGW_SESSION_MAX_AGE", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_max_age: Duration,
}

impl Default for SsoArgs {
    fn default() -> Self {
        Self {
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_redirect_url: None,
            oidc_allowed_domains: String::new(),
            oidc_role_map: String::new(),
            oidc_scopes: "openid email profile".into(),
            session_cookie_secure: true,
            session_idle_timeout: Duration::from_secs(3600),
            session_max_age: Duration::from_secs(12 * 3600),
        }
    }
}

/// One `claim:value=role` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    pub claim: String,
    pub value: String,
    pub role: Role,
}

/// The checked single sign-on settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Without a trailing `/`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub redirect_url: String,
    /// Lowercase; empty: any.
    pub allowed_domains: Vec<String>,
    pub rules: Vec<RoleRule>,
    pub scopes: String,
}

fn config(message: String) -> RuntimeError {
    RuntimeError::Config(message)
}

fn parse_role(text: &str) -> Option<Role> {
    Some(match text.trim() {
        "owner" => Role::Owner,
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        "billing_viewer" => Role::BillingViewer,
        other => {
            let team = other.strip_prefix("team_admin:")?;
            Role::TeamAdmin {
                team_id: Uuid::parse_str(team.trim()).ok()?,
            }
        }
    })
}

/// Parses `AIGW_OIDC_ROLE_MAP`.
pub fn parse_role_map(text: &str) -> Result<Vec<RoleRule>, RuntimeError> {
    let mut rules = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            config(format!(
                "AIGW_OIDC_ROLE_MAP: {entry:?} is not `claim:value=role` (role: owner, admin, viewer, billing_viewer or team_admin:<team id>)"
            ))
        };
        let (rule, role) = entry.rsplit_once('=').ok_or_else(bad)?;
        let (claim, value) = rule.split_once(':').ok_or_else(bad)?;
        let (claim, value) = (claim.trim(), value.trim());
        if claim.is_empty() || value.is_empty() {
            return Err(bad());
        }
        rules.push(RoleRule {
            claim: claim.to_string(),
            value: value.to_string(),
            role: parse_role(role).ok_or_else(bad)?,
        });
    }
    if rules.len() > 256 {
        return Err(config("AIGW_OIDC_ROLE_MAP: at most 256 entries".into()));
    }
    Ok(rules)
}

impl SsoArgs {
    /// The single sign-on settings, if it is configured.
    pub fn oidc(&self, master_key_set: bool) -> Result<Option<OidcSettings>, RuntimeError> {
        let (issuer, client_id, secret, redirect) = match (
            &self.oidc_issuer,
            &self.oidc_client_id,
            &self.oidc_client_secret,
            &self.oidc_redirect_url,
        ) {
            (None, None, None, None) => return Ok(None),
            (Some(i), Some(c), Some(s), Some(r)) => (i, c, s, r),
            _ => {
                return Err(config(
                    "single sign-on needs all of AIGW_OIDC_ISSUER, AIGW_OIDC_CLIENT_ID, AIGW_OIDC_CLIENT_SECRET and AIGW_OIDC_REDIRECT_URL".into(),
                ));
            }
        };
        if !master_key_set {
            return Err(config(
                "single sign-on needs AIGW_MASTER_KEY (it seals the login cookie)".into(),
            ));
        }
        for (name, url) in [
            ("AIGW_OIDC_ISSUER", issuer),
            ("AIGW_OIDC_REDIRECT_URL", redirect),
        ] {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| config(format!("{name}: {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(config(format!("{name}: {url:?} is not http(s)")));
            }
        }
        let allowed_domains = self
            .oidc_allowed_domains
            .split(',')
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Ok(Some(OidcSettings {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.clone(),
            client_secret: secret.clone(),
            redirect_url: redirect.clone(),
            allowed_domains,
            rules: parse_role_map(&self.oidc_role_map)?,
            scopes: self.oidc_scopes.clone(),
        }))
    }
}

/// The roles `claims` map to, by `rules` (sorted, without repeats).
pub fn mapped_roles(rules: &[RoleRule], claims: &serde_json::Value) -> Vec<Role> {
    let mut roles: Vec<Role> = rules
        .iter()
        .filter(|r| match claims.get(&r.claim) {
            Some(serde_json::Value::String(s)) => *s == r.value,
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|i| i.as_str() == Some(r.value.as_str()))
            }
            _ => false,
        })
        .map(|r| r.role)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_map_parses_and_maps() {
        let team = Uuid::now_v7();
        let rules = parse_role_map(&format!(
            "groups:aigw-admins=admin, groups:finance=billing_viewer,dept:ops=team_admin:{team}"
        ))
        .unwrap();
        assert_eq!(rules.len(), 3);
        let claims = json!({ "groups": ["x", "finance"], "dept": "ops" });
        assert_eq!(
            mapped_roles(&rules, &claims),
            vec![Role::TeamAdmin { team_id: team }, Role::BillingViewer]
        );
        assert!(mapped_roles(&rules, &json!({ "groups": "nope" })).is_empty());
        for bad in [
            "groups=admin",
            "groups:x=root",
            ":x=admin",
            "g:x=team_admin:zz",
        ] {
            assert!(parse_role_map(bad).is_err(), "{bad}");
        }
        assert!(parse_role_map("").unwrap().is_empty());
    }

    #[test]
    fn partial_settings_are_refused() {
        let mut args = SsoArgs::default();
        assert!(args.oidc(true).unwrap().is_none());
        args.oidc_issuer = Some("https://idp.example.com/".into());
        assert!(args.oidc(true).is_err());
        args.oidc_client_id = Some("aigw".into());
        args.oidc_client_secret = Some(SecretString::from("s"));
        args.oidc_redirect_url = Some("https://gw.example.com/admin/auth/oidc/callback".into());
        args.oidc_allowed_domains = "Example.com, @example.org".into();
        assert!(args.oidc(false).is_err());
        let s = args.oidc(true).unwrap().unwrap();
        assert_eq!(s.issuer, "https://idp.example.com");
        assert_eq!(s.allowed_domains, vec!["example.com", "example.org"]);
    }
}
