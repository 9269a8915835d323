//! `aigw providers reseal`: seals every provider credential again under the
//! current master key, the second step of a master-key rotation.
//!
//! Invariants: a credential that is already current (v2 under
//! `AIGW_MASTER_KEY`) is left as it is, so a provider with nothing to do
//! gets no event and running the command twice changes nothing the second
//! time; every change goes through the provider aggregate
//! (`ResealCredentials`, recorded as `ProviderUpdated` with the given actor),
//! which refuses it if an admin changed the credentials meanwhile (the
//! provider is then read again and retried).

use aigw_events::provider::{ProviderAggregate, SealedCredentials};
use aigw_events::{META_ACTOR, Names, ProviderCommand};
use chrono::Utc;
use cqrs_es::AggregateError;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::crypto::{Binding, CredentialField, Sealer, sealed_fields};
use crate::registry::{self, KIND_PROVIDERS};
use crate::store::{self, metadata};
use crate::{Result, RuntimeError, Stores};

/// Tries per provider when its credentials change under the command.
const TRIES: usize = 3;

/// What resealing one provider did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// Every credential was already sealed under the current master key.
    Current,
    /// This many credentials were sealed again (one `ProviderUpdated`).
    Resealed(usize),
    /// A credential opens with neither master key (or the command failed);
    /// the provider is left as it is.
    Failed(String),
}

/// One provider's result.
#[derive(Debug, Clone)]
pub struct ProviderResult {
    pub id: Uuid,
    pub name: String,
    pub outcome: Resealed,
}

/// Reseals every live provider's credentials; `progress` sees each
/// provider's result as it is done. Removed providers are skipped (their
/// past events keep the ciphertexts they had: history is not rewritten).
/// `announce`: tell running replicas at once (they also reload every 10 s).
pub async fn reseal_all(
    stores: &Stores,
    sealer: &Sealer,
    actor: &str,
    announce: Option<(&async_nats::Client, &Names)>,
    mut progress: impl FnMut(&ProviderResult),
) -> Result<Vec<ProviderResult>> {
    if !sealer.is_configured() {
        return Err(RuntimeError::Config(
            "AIGW_MASTER_KEY is not set: there is no key to reseal under".into(),
        ));
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 ORDER BY 1",
    )
    .bind(<ProviderAggregate as cqrs_es::Aggregate>::TYPE)
    .fetch_all(&stores.pool)
    .await?;
    let mut results = Vec::new();
    for id in ids {
        let Ok(uuid) = Uuid::parse_str(&id) else {
            continue;
        };
        let Some(result) = reseal_one(stores, sealer, actor, uuid).await? else {
            continue;
        };
        if matches!(result.outcome, Resealed::Resealed(_)) {
            registry::refresh_provider(&stores.pool, uuid).await?;
            if let Some((client, names)) = announce {
                registry::announce(client, names, KIND_PROVIDERS, uuid).await;
            }
        }
        progress(&result);
        results.push(result);
    }
    Ok(results)
}

/// Reseals one provider; `None` when it does not exist or was removed.
async fn reseal_one(
    stores: &Stores,
    sealer: &Sealer,
    actor: &str,
    id: Uuid,
) -> Result<Option<ProviderResult>> {
    let mut last = None;
    for _ in 0..TRIES {
        let Some((provider, _)) =
            store::load::<ProviderAggregate>(&stores.pool, &id.to_string()).await?
        else {
            return Ok(None);
        };
        let Some(spec) = provider.spec.filter(|_| !provider.removed) else {
            return Ok(None);
        };
        let done = |outcome| {
            Ok(Some(ProviderResult {
                id,
                name: spec.name.clone(),
                outcome,
            }))
        };
        let (to, count) = match resealed(sealer, id, &spec.sealed()) {
            Ok(Some(resealed)) => resealed,
            Ok(None) => return done(Resealed::Current),
            Err(e) => return done(Resealed::Failed(e)),
        };
        let command = ProviderCommand::ResealCredentials {
            from: spec.sealed(),
            to,
            actor: actor.to_string(),
            at: Utc::now(),
        };
        let meta = metadata(&[(META_ACTOR, actor)]);
        match stores
            .providers
            .execute_with_metadata(&id.to_string(), command, meta)
            .await
        {
            Ok(()) => return done(Resealed::Resealed(count)),
            // Changed under us: read it again.
            Err(AggregateError::AggregateConflict)
            | Err(AggregateError::UserError(aigw_events::ProviderError::CredentialsChanged)) => {
                last = Some(spec.name.clone());
            }
            Err(e) => return done(Resealed::Failed(e.to_string())),
        }
    }
    Ok(Some(ProviderResult {
        id,
        name: last.unwrap_or_default(),
        outcome: Resealed::Failed("its credentials kept changing during the reseal".into()),
    }))
}

fn field_name(field: CredentialField) -> String {
    match field {
        CredentialField::ApiKey => "api_key".into(),
        CredentialField::Extra(n) => format!("api_keys[{n}]"),
        CredentialField::SessionToken => "aws_session_token".into(),
    }
}

/// The credentials sealed under the current master key and how many of
/// them changed, or `None` when all of them already were current.
fn resealed(
    sealer: &Sealer,
    id: Uuid,
    from: &SealedCredentials,
) -> std::result::Result<Option<(SealedCredentials, usize)>, String> {
    let spec = aigw_events::ProviderSpec {
        sealed_credential: from.credential.clone(),
        extra_credentials: from.extra.clone(),
        sealed_session_token: from.session_token.clone(),
        ..Default::default()
    };
    let mut to = from.clone();
    let mut count = 0;
    for (field, sealed) in sealed_fields(&spec) {
        let binding = Binding::new(id, field);
        let opened = sealer
            .open_checked(sealed, &binding)
            .map_err(|e| format!("{}: {e}", field_name(field)))?;
        if opened.current {
            continue;
        }
        let fresh = sealer
            .seal(opened.secret.expose_secret(), &binding)
            .map_err(|e| format!("{}: {e}", field_name(field)))?;
        let slot = match field {
            CredentialField::ApiKey => to.credential.as_mut(),
            CredentialField::Extra(n) => to.extra.get_mut(n),
            CredentialField::SessionToken => to.session_token.as_mut(),
        };
        if let Some(slot) = slot {
            *slot = fresh;
            count += 1;
        }
    }
    Ok((count > 0).then_some((to, count)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn only_stale_credentials_are_sealed_again() {
        let id = Uuid::from_u128(5);
        let old = Sealer::new(Some(&SecretString::from("old master key")));
        let rotated = Sealer::with_previous(
            Some(&SecretString::from("new master key")),
            Some(&SecretString::from("old master key")),
        );
        let seal = |s: &Sealer, field, v: &str| s.seal(v, &Binding::new(id, field)).unwrap();
        let current_extra = seal(&rotated, CredentialField::Extra(1), "b2");
        let from = SealedCredentials {
            credential: Some(seal(&old, CredentialField::ApiKey, "a")),
            extra: vec![
                seal(&old, CredentialField::Extra(0), "b1"),
                current_extra.clone(),
            ],
            session_token: Some(seal(&old, CredentialField::SessionToken, "t")),
        };
        let (to, count) = resealed(&rotated, id, &from).unwrap().unwrap();
        assert_eq!(count, 3);
        assert_eq!(to.extra[1], current_extra, "a current one is kept as is");
        let new_only = Sealer::new(Some(&SecretString::from("new master key")));
        let open = |v: &str, field| {
            new_only
                .open(v, &Binding::new(id, field))
                .unwrap()
                .expose_secret()
                .to_string()
        };
        assert_eq!(
            open(to.credential.as_deref().unwrap(), CredentialField::ApiKey),
            "a"
        );
        assert_eq!(open(&to.extra[0], CredentialField::Extra(0)), "b1");
        assert_eq!(
            open(
                to.session_token.as_deref().unwrap(),
                CredentialField::SessionToken
            ),
            "t"
        );
        // A second pass finds nothing to do.
        assert_eq!(resealed(&rotated, id, &to).unwrap(), None);
        // A credential no key opens is reported, naming its field.
        let stranger = Sealer::new(Some(&SecretString::from("someone else's key")));
        let err = resealed(&stranger, id, &from).unwrap_err();
        assert!(err.starts_with("api_key:"), "{err}");
    }
}
