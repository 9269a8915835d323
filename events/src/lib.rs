//! aigw's shared vocabulary: aggregates, commands, events, wire messages and names.
//!
//! This crate stays pure: no HTTP, no database driver, no runtime. Every role
//! speaks through these types, and stored events must stay readable forever
//! (see `tests/fixtures`).

pub mod admin_user;
pub mod alert;
pub mod alias;
pub mod deployments;
pub mod job;
pub mod key;
pub mod names;
pub mod pricing;
pub mod project;
pub mod provider;
pub mod provider_test;
pub mod raw_body;
pub mod request;
pub mod response;
pub mod sign_in;
pub mod team;
pub mod wire;

pub use admin_user::{
    AdminToken, AdminUserAggregate, AdminUserCommand, AdminUserError, AdminUserEvent, Role,
    UserStatus,
};
pub use alert::{
    AlertLevel, BudgetAlertAggregate, BudgetAlertCommand, BudgetAlertError, BudgetAlertEvent,
};
pub use alias::{
    AliasAggregate, AliasCommand, AliasError, AliasEvent, AliasSpec, AliasTarget, Strategy,
};
pub use job::{
    Delivery, JobAggregate, JobCommand, JobError, JobEvent, JobResult, JobSpec, JobStatus, RunCost,
    WebhookState, WebhookStatus,
};
pub use key::{KeyAggregate, KeyCommand, KeyError, KeyEvent, KeyStatus};
pub use names::Names;
pub use project::{ProjectAggregate, ProjectCommand, ProjectEvent};
pub use provider::{
    ProviderAggregate, ProviderCommand, ProviderError, ProviderEvent, ProviderSpec,
};
pub use request::{
    Attempt, Attribution, ErrorClass, Outcome, RequestAggregate, RequestCommand, RequestError,
    RequestEvent, Route, Usage,
};
pub use response::{ResponseAggregate, ResponseCommand, ResponseError, ResponseEvent};
pub use sign_in::{
    ClientInfo, SignInAggregate, SignInCommand, SignInError, SignInEvent, SignInStatus,
};
pub use team::{Policy, TeamAggregate, TeamCommand, TeamEvent, UnitError, UnitStatus};

/// Version written with every event of this crate; bump it with an upcaster.
pub const EVENT_VERSION: &str = "1.0";

/// Metadata key under which the request id travels with each stored event.
pub const META_REQUEST_ID: &str = "request_id";
/// Metadata key naming who caused an event (the admin identity or a role).
pub const META_ACTOR: &str = "actor";
