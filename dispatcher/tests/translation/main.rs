//! Property tests of the dispatcher's translators and stream decoders:
//! OpenAI chat requests to Anthropic, Gemini, Bedrock and Cohere, their
//! answers back, every streamed answer's bytes to OpenAI chunks, and how
//! structured output and reasoning cross to each (`features`).
//! Case counts are bounded so the whole binary runs in seconds.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod features;
mod requests;
mod responses;
mod scripts;
mod strategies;
mod streams;
