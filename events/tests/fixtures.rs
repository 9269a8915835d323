//! Stored events must stay readable forever: every fixture of every version
//! deserializes into today's types.

use aigw_events::{KeyEvent, ProviderEvent, RequestEvent};
use serde_json::Value;

#[test]
fn version_1_0_events_still_deserialize() {
    let text = include_str!("fixtures/v1.0.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let read = |name: &str| all[name].as_array().unwrap().clone();
    for v in read("key") {
        serde_json::from_value::<KeyEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    for v in read("provider") {
        serde_json::from_value::<ProviderEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    let requests = read("request");
    assert_eq!(requests.len(), 6);
    for v in requests {
        serde_json::from_value::<RequestEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

/// Provider events written once presets, native kinds, settings and prices
/// existed (all additions are optional fields, so v1.0 above still reads).
#[test]
fn preset_provider_events_deserialize() {
    let text = include_str!("fixtures/providers-presets.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let events = all["provider"].as_array().unwrap();
    assert_eq!(events.len(), 6);
    for v in events {
        let e = serde_json::from_value::<ProviderEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        // What was read writes and reads back unchanged.
        let again: ProviderEvent =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }
}

/// Events of media providers and requests (new provider kinds, media prices,
/// media usage counts): they read, and write back unchanged.
#[test]
fn media_events_deserialize() {
    let text = include_str!("fixtures/media.json");
    let all: Value = serde_json::from_str(text).unwrap();
    for v in all["provider"].as_array().unwrap() {
        let e = serde_json::from_value::<ProviderEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        let again: ProviderEvent =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }
    let requests = all["request"].as_array().unwrap();
    for v in requests {
        let e = serde_json::from_value::<RequestEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
    }
    assert_eq!(requests[0]["RequestCompleted"]["usage"]["images"], 2);
}

/// Key events with a concurrency limit (`max_concurrency`, an optional
/// field): they read, and write back unchanged.
#[test]
fn key_concurrency_events_deserialize() {
    use aigw_events::key::KeyAggregate;
    use cqrs_es::Aggregate;
    let text = include_str!("fixtures/key-concurrency.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let mut key = KeyAggregate::default();
    for v in all["key"].as_array().unwrap() {
        let e =
            serde_json::from_value::<KeyEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
        key.apply(e.clone());
        if matches!(e, KeyEvent::KeyIssued { .. }) {
            assert_eq!(key.settings.limits.max_concurrency, Some(3));
        }
    }
    assert_eq!(key.settings.limits.max_concurrency, None);
}

/// A job cancelled while it ran, whose run then ended and was billed
/// (`JobRunBilled`): the events read, write back unchanged, and fold into a
/// cancelled job that shows the run's cost.
#[test]
fn job_cancelled_run_events_deserialize() {
    use aigw_events::{JobAggregate, JobEvent, JobStatus};
    use cqrs_es::Aggregate;
    let text = include_str!("fixtures/job-cancelled-run.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let mut job = JobAggregate::default();
    for v in all["job"].as_array().unwrap() {
        let e =
            serde_json::from_value::<JobEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
        job.apply(e);
    }
    assert_eq!(job.status, JobStatus::Cancelled);
    let run = job.cancelled_run.unwrap();
    assert_eq!((run.usage.total(), run.cost_micros), (30, Some(50)));
}

/// Azure providers: one stored before `deployments` existed (a
/// `deployment` setting and the preset's models) serves that deployment,
/// model unknown and unpriced; one with `deployments` reads and writes
/// back unchanged.
#[test]
fn azure_provider_events_before_and_with_deployments() {
    use aigw_events::deployments::Lookup;
    let spec_of = |e: ProviderEvent| match e {
        ProviderEvent::ProviderConfigured { spec, .. }
        | ProviderEvent::ProviderUpdated { spec, .. } => spec,
        ProviderEvent::ProviderRemoved { .. } => panic!("no spec"),
    };
    let before: Value =
        serde_json::from_str(include_str!("fixtures/providers-presets.json")).unwrap();
    let legacy = before["provider"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ProviderUpdated"]["spec"]["kind"] == "azure")
        .unwrap();
    let legacy = spec_of(serde_json::from_value(legacy.clone()).unwrap());
    assert_eq!(legacy.served(), ["prod-gpt"]);
    assert_eq!(legacy.lookup("gpt-5.4"), Lookup::NotServed);
    assert_eq!(legacy.served_model("prod-gpt"), None);
    assert_eq!(legacy.price("prod-gpt"), None);

    let text = include_str!("fixtures/azure-deployments.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let stored = &all["provider"][0];
    let event: ProviderEvent = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), *stored);
    let spec = spec_of(event);
    assert_eq!(spec.lookup("gpt-5.4"), Lookup::Serves("prod-5"));
    assert_eq!(spec.served_model("my-gpt4o-mini"), Some("gpt-4o-mini"));
    assert_eq!(
        spec.price("prod-5").unwrap().output_micros_per_mtok,
        15_000_000
    );
    assert_eq!(spec.price("raw"), None);
}

/// Events with token classes (usage classes, class prices, the fallback
/// flag): they read, and write back unchanged.
#[test]
fn token_class_events_deserialize() {
    let text = include_str!("fixtures/token-classes.json");
    let all: Value = serde_json::from_str(text).unwrap();
    for v in all["provider"].as_array().unwrap() {
        let e = serde_json::from_value::<ProviderEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        let again: ProviderEvent =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(again, e);
        let ProviderEvent::ProviderConfigured { spec, .. } = e else {
            panic!("{v}")
        };
        let price = spec.price("claude-sonnet-5").unwrap();
        assert_eq!(price.cache_write_1h_micros_per_mtok, Some(6_000_000));
    }
    let requests = all["request"].as_array().unwrap();
    for v in requests {
        let e = serde_json::from_value::<RequestEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
    }
    let RequestEvent::RequestCompleted {
        usage,
        price_fallback,
        ..
    } = serde_json::from_value(requests[0].clone()).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            usage.cached_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.reasoning_tokens
        ),
        (2_000, 3_000, 4_000, 200)
    );
    assert!(price_fallback);
}

/// Events written before token classes existed read with every class at 0
/// and no fallback, and write back byte for byte: replaying them gives the
/// views and costs they always gave.
#[test]
fn events_before_token_classes_read_as_classless() {
    let text = include_str!("fixtures/v1.0.json");
    let all: Value = serde_json::from_str(text).unwrap();
    for v in all["request"].as_array().unwrap() {
        let e = serde_json::from_value::<RequestEvent>(v.clone()).unwrap();
        if let RequestEvent::RequestCompleted {
            usage,
            price_fallback,
            ..
        }
        | RequestEvent::RequestFailed {
            usage,
            price_fallback,
            ..
        } = &e
        {
            assert!(!price_fallback);
            assert_eq!(usage.cache_tokens() + usage.reasoning_tokens, 0);
            assert_eq!(usage.uncached_prompt_tokens(), usage.prompt_tokens);
            // Nothing new is written for them.
            let written = serde_json::to_value(&e).unwrap().to_string();
            assert!(!written.contains("price_fallback") && !written.contains("cached_tokens"));
        }
    }
}

/// Outcomes with attribution (user, tags) and budget alerts: they read, and
/// write back unchanged.
#[test]
fn attribution_and_alert_events_deserialize() {
    let text = include_str!("fixtures/attribution-alerts.json");
    let all: Value = serde_json::from_str(text).unwrap();
    for v in all["request"].as_array().unwrap() {
        let e = serde_json::from_value::<RequestEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
    }
    for v in all["budget_alert"].as_array().unwrap() {
        let e = serde_json::from_value::<aigw_events::BudgetAlertEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
    }
}

/// Admin user events (roles, tokens as hashes): they read, write back
/// unchanged, and fold into the state they describe.
#[test]
fn admin_user_events_deserialize() {
    use cqrs_es::Aggregate;
    let text = include_str!("fixtures/admin-users.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let mut user = aigw_events::AdminUserAggregate::default();
    for v in all["admin_user"].as_array().unwrap() {
        let e = serde_json::from_value::<aigw_events::AdminUserEvent>(v.clone())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(serde_json::to_value(&e).unwrap(), *v);
        user.apply(e);
    }
    assert_eq!(user.name, "Ada L.");
    assert_eq!(user.roles.len(), 3);
    assert!(user.tokens[0].revoked_at.is_some());
    assert_eq!(user.status, aigw_events::UserStatus::Disabled);
}

/// Sign-in events (no secret in them): they read, write back unchanged,
/// and fold into the sign-in they describe.
#[test]
fn sign_in_events_deserialize() {
    use aigw_events::{SignInAggregate, SignInEvent, SignInStatus};
    use cqrs_es::Aggregate;
    let all: Value = serde_json::from_str(include_str!("fixtures/sign-ins.json")).unwrap();
    let fold = |name: &str| {
        let mut s = SignInAggregate::default();
        for v in all[name].as_array().unwrap() {
            let e = serde_json::from_value::<SignInEvent>(v.clone())
                .unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(serde_json::to_value(&e).unwrap(), *v);
            s.apply(e);
        }
        s
    };
    let ok = fold("succeeded");
    assert_eq!(ok.status, SignInStatus::Ended);
    assert_eq!(ok.email.as_deref(), Some("ada@example.com"));
    assert_eq!(fold("failed").status, SignInStatus::Failed);
}
