//! Integration tests: the real roles against real NATS (a current
//! nats-server started for this test binary) and PostgreSQL, with each test
//! in its own database and NATS namespace, providers faked with wiremock.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acceptance;
mod alerts;
mod anthropic_admission;
mod anthropic_messages;
mod anthropic_sdk_native;
mod anthropic_streams;
mod attribution;
mod azure;
mod billing;
mod chat;
mod claude_code;
mod codex_cli;
mod concurrency;
mod config_file;
mod cors;
mod cost;
mod database_hosts;
mod egress;
mod errors;
mod gemini_cli;
mod gemini_generate;
mod genai_sdk;
mod harness;
mod hostile;
mod idempotency;
mod jobs;
mod jobs_dialects;
mod keys;
mod large_bodies;
mod lost_answer;
mod media;
mod nats_cluster;
mod node_loss;
mod oidc;
mod oidc_provider;
mod openapi;
mod operations;
mod presets;
mod probes;
mod quarantine;
mod queue_limits;
mod quotas;
mod resilience;
mod responses;
mod responses_store;
mod roles;
mod routing;
mod scale_out;
mod sdk;
mod secrets;
mod server_limits;
mod shutdown;
mod slow_reader;
mod stats;
mod teams;
mod temp_postgres;
mod token_classes;
mod traces;
mod ui;
mod upstream;
mod usage;
