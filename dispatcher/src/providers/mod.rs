//! The provider seam: one [`Provider`] per [`ProviderKind`], each in its own
//! module here, stating what it serves ([`Capabilities`]) beside the code
//! that serves it.
//!
//! Invariants: [`of`] is the only `match` over provider kinds that picks
//! the code to call; an endpoint a provider does not override is refused
//! with `UpstreamErrorKind::UnsupportedEndpoint` before any network call;
//! each provider's declared capabilities equal what it implements and the
//! table the ingress reads (`ProviderKind::serves`, `speaks`,
//! `max_images`), which the tests below check for every kind.

pub mod anthropic;
pub mod anthropic_wire;
pub mod assemblyai;
pub mod azure;
pub mod bedrock;
pub mod bedrock_wire;
pub mod cohere;
pub mod cohere_wire;
pub mod elevenlabs;
pub mod gemini;
pub mod gemini_wire;
pub mod media;
pub mod openai;
pub mod replicate;
pub mod runway;
pub mod stability;

use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::wire::{Dialect, Endpoint};
use aigw_runtime::egress::Egress;
use bytes::Bytes;
use futures::future::BoxFuture;
use secrecy::SecretString;
use serde_json::Value;

use crate::answer::{Answer, Credentials};
use crate::upstream::{UpstreamError, unsupported_endpoint};

/// A caller dialect a provider may take verbatim (see `crate::dialect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeDialect {
    AnthropicMessages,
    GeminiGenerate,
}

/// What a provider serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The OpenAI endpoints aigw can call it for.
    pub endpoints: &'static [Endpoint],
    /// The caller dialects it takes natively (relayed verbatim).
    pub native: &'static [NativeDialect],
    /// The most images one request may ask of it, where it has a limit of
    /// its own (below the API's 10).
    pub max_images: Option<u64>,
    /// Whether an abandoned call (deadline, caller gone) cancels the
    /// provider's task, which then produces and bills nothing more (polled
    /// predictions and tasks); other calls are let run to their end.
    pub cancels_upstream: bool,
}

impl Capabilities {
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.endpoints.contains(&endpoint)
    }

    pub fn speaks(&self, dialect: &Dialect) -> bool {
        let native = match dialect {
            Dialect::AnthropicMessages { .. } => NativeDialect::AnthropicMessages,
            Dialect::GeminiGenerate => NativeDialect::GeminiGenerate,
            // No kind speaks Responses as a whole: OpenAI itself is a
            // preset of the OpenAI-compatible kind (`ProviderSpec::speaks`).
            Dialect::OpenaiChat | Dialect::OpenaiResponses => return false,
        };
        self.native.contains(&native)
    }

    /// Whether it serves this request: its endpoint, and for images the
    /// number it asks for.
    pub fn serves_body(&self, endpoint: Endpoint, body: &Value) -> bool {
        if !self.serves(endpoint) {
            return false;
        }
        let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
        endpoint != Endpoint::Images || self.max_images.is_none_or(|max| n <= max)
    }
}

/// One call to one provider: the client, the provider's settings and the
/// opened secrets of this attempt.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub http: &'a reqwest::Client,
    pub spec: &'a ProviderSpec,
    pub credentials: Credentials<'a>,
}

impl<'a> Call<'a> {
    /// A call with an API key only.
    pub fn with_key(
        http: &'a reqwest::Client,
        spec: &'a ProviderSpec,
        api_key: Option<&'a SecretString>,
    ) -> Self {
        Self {
            http,
            spec,
            credentials: Credentials {
                api_key,
                session_token: None,
            },
        }
    }

    pub fn api_key(&self) -> Option<&'a SecretString> {
        self.credentials.api_key
    }

    pub fn name(&self) -> &'a str {
        &self.spec.name
    }
}

/// An answer on its way.
pub type Reply<'a> = BoxFuture<'a, Result<Answer, UpstreamError>>;

fn refuse<'a>(call: Call<'a>, endpoint: Endpoint) -> Reply<'a> {
    let error = unsupported_endpoint(call.name(), endpoint.path());
    Box::pin(std::future::ready(Err(error)))
}

/// A kind of provider. Bodies are OpenAI-format with the model set;
/// answers are OpenAI-format (see [`Answer`]).
pub trait Provider: Sync {
    /// What it serves; every endpoint listed here is overridden below.
    fn serves(&self) -> Capabilities;

    /// The GenAI `gen_ai.system` of a provider of this kind.
    fn gen_ai_system(&self, spec: &ProviderSpec) -> String;

    /// `POST /v1/chat/completions`.
    fn chat<'a>(&'a self, call: Call<'a>, _body: &'a Value, _stream: bool) -> Reply<'a> {
        refuse(call, Endpoint::Chat)
    }

    /// `POST /v1/embeddings`.
    fn embeddings<'a>(&'a self, call: Call<'a>, _body: &'a Value) -> Reply<'a> {
        refuse(call, Endpoint::Embeddings)
    }

    /// `POST /v1/rerank`; the answer in `crate::rerank`'s one shape.
    fn rerank<'a>(&'a self, call: Call<'a>, _body: &'a Value) -> Reply<'a> {
        refuse(call, Endpoint::Rerank)
    }

    /// `POST /v1/moderations`.
    fn moderations<'a>(&'a self, call: Call<'a>, _body: &'a Value) -> Reply<'a> {
        refuse(call, Endpoint::Moderations)
    }

    /// `POST /v1/images/generations`; `egress` fetches the output files
    /// async providers answer with.
    fn images<'a>(&'a self, call: Call<'a>, _egress: &'a Egress, _body: &'a Value) -> Reply<'a> {
        refuse(call, Endpoint::Images)
    }

    /// `POST /v1/audio/speech`.
    fn speech<'a>(&'a self, call: Call<'a>, _body: &'a Value) -> Reply<'a> {
        refuse(call, Endpoint::Speech)
    }

    /// `POST /v1/audio/transcriptions`: `body` is the JSON the ingress
    /// queued, `audio` the uploaded file.
    fn transcriptions<'a>(&'a self, call: Call<'a>, _body: &'a Value, _audio: Bytes) -> Reply<'a> {
        refuse(call, Endpoint::Transcriptions)
    }

    /// A free, read-only check of the endpoint and credential (what was
    /// read), for providers that cannot chat; `None` for those that can
    /// (they are checked with a one-token chat).
    fn check_account<'a>(
        &'a self,
        _call: Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        None
    }
}

/// The provider of `kind`.
pub fn of(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::OpenaiCompatible => &openai::OpenaiCompatible,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Bedrock => &bedrock::Bedrock,
        ProviderKind::Cohere => &cohere::Cohere,
        ProviderKind::Stability => &stability::Stability,
        ProviderKind::Elevenlabs => &elevenlabs::Elevenlabs,
        ProviderKind::Assemblyai => &assemblyai::Assemblyai,
        ProviderKind::Replicate => &replicate::Replicate,
        ProviderKind::Runway => &runway::Runway,
    }
}

/// What `kind` serves.
pub fn capabilities(kind: ProviderKind) -> Capabilities {
    of(kind).serves()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;
    use serde_json::json;

    /// Every kind; the `match` fails to build when one is added.
    fn all_kinds() -> Vec<ProviderKind> {
        use ProviderKind as K;
        let all = vec![
            K::OpenaiCompatible,
            K::Anthropic,
            K::Gemini,
            K::Azure,
            K::Bedrock,
            K::Cohere,
            K::Stability,
            K::Elevenlabs,
            K::Assemblyai,
            K::Replicate,
            K::Runway,
        ];
        for k in &all {
            match k {
                K::OpenaiCompatible
                | K::Anthropic
                | K::Gemini
                | K::Azure
                | K::Bedrock
                | K::Cohere
                | K::Stability
                | K::Elevenlabs
                | K::Assemblyai
                | K::Replicate
                | K::Runway => {}
            }
        }
        all
    }

    const ENDPOINTS: [Endpoint; 7] = [
        Endpoint::Chat,
        Endpoint::Embeddings,
        Endpoint::Images,
        Endpoint::Speech,
        Endpoint::Transcriptions,
        Endpoint::Rerank,
        Endpoint::Moderations,
    ];

    #[test]
    fn the_ingress_table_matches_what_providers_declare() {
        let dialects = [
            Dialect::OpenaiChat,
            Dialect::AnthropicMessages {
                version: None,
                beta: None,
            },
            Dialect::GeminiGenerate,
            Dialect::OpenaiResponses,
        ];
        for kind in all_kinds() {
            let declared = capabilities(kind);
            for e in ENDPOINTS {
                assert_eq!(declared.serves(e), kind.serves(e), "{kind:?} {e:?}");
                for n in [1, 4, 5] {
                    let body = json!({"n": n});
                    assert_eq!(
                        declared.serves_body(e, &body),
                        kind.serves_body(e, &body),
                        "{kind:?} {e:?} n={n}"
                    );
                }
            }
            for d in &dialects {
                assert_eq!(declared.speaks(d), kind.speaks(d), "{kind:?} {d:?}");
            }
            assert_eq!(declared.max_images, kind.max_images(), "{kind:?}");
        }
    }

    /// Calls `endpoint` of `kind` against an address nothing listens on.
    async fn outcome(kind: ProviderKind, endpoint: Endpoint) -> UpstreamErrorKind {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let egress = Egress::new(true).unwrap();
        let key = SecretString::from("k".to_string());
        let spec = ProviderSpec {
            name: "p".into(),
            kind,
            base_url: "http://127.0.0.1:1/v1".into(),
            settings: [("region".to_string(), "us-east-1".to_string())].into(),
            ..ProviderSpec::default()
        };
        let call = Call {
            http: &http,
            spec: &spec,
            credentials: Credentials {
                api_key: Some(&key),
                session_token: None,
            },
        };
        let body = json!({"model": "owner/model", "input": "hi", "prompt": "a cat",
            "query": "q", "documents": ["d"],
            "voice": "JBFqnCBsd6RMkjVDRZzb",
            "messages": [{"role": "user", "content": "hi"}]});
        let provider = of(kind);
        let answer = match endpoint {
            Endpoint::Chat => provider.chat(call, &body, false).await,
            Endpoint::Embeddings => provider.embeddings(call, &body).await,
            Endpoint::Rerank => provider.rerank(call, &body).await,
            Endpoint::Moderations => provider.moderations(call, &body).await,
            Endpoint::Images => provider.images(call, &egress, &body).await,
            Endpoint::Speech => provider.speech(call, &body).await,
            Endpoint::Transcriptions => {
                provider
                    .transcriptions(call, &body, Bytes::from_static(b"RIFF"))
                    .await
            }
        };
        match answer {
            Ok(_) => panic!("{kind:?} {endpoint:?} answered from nowhere"),
            Err(e) => e.kind,
        }
    }

    #[tokio::test]
    async fn providers_implement_what_they_declare_and_refuse_the_rest() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for kind in all_kinds() {
            let declared = capabilities(kind);
            for e in ENDPOINTS {
                let kind_of_error = outcome(kind, e).await;
                let refused = kind_of_error == UpstreamErrorKind::UnsupportedEndpoint;
                assert_eq!(
                    refused,
                    !declared.serves(e),
                    "{kind:?} {e:?}: {kind_of_error:?}"
                );
            }
            // Media-only providers have an account check; the rest chat.
            let call_spec = ProviderSpec {
                kind,
                ..ProviderSpec::default()
            };
            let http = reqwest::Client::new();
            let call = Call {
                http: &http,
                spec: &call_spec,
                credentials: Credentials::default(),
            };
            assert_eq!(
                of(kind).check_account(call).is_some(),
                !declared.serves(Endpoint::Chat),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn trace_names_and_upstream_cancellation_per_kind() {
        use ProviderKind as K;
        let expected = [
            (K::OpenaiCompatible, "openai", false),
            (K::Azure, "azure.ai.openai", false),
            (K::Anthropic, "anthropic", false),
            (K::Gemini, "gcp.gemini", false),
            (K::Bedrock, "aws.bedrock", false),
            (K::Cohere, "cohere", false),
            (K::Stability, "stability", false),
            (K::Elevenlabs, "elevenlabs", false),
            (K::Assemblyai, "assemblyai", true),
            (K::Replicate, "replicate", true),
            (K::Runway, "runway", true),
        ];
        assert_eq!(expected.len(), all_kinds().len());
        for (kind, system, cancels) in expected {
            let spec = ProviderSpec {
                kind,
                ..ProviderSpec::default()
            };
            assert_eq!(of(kind).gen_ai_system(&spec), system, "{kind:?}");
            assert_eq!(capabilities(kind).cancels_upstream, cancels, "{kind:?}");
        }
        let deepseek = ProviderSpec {
            preset: Some("deepseek".into()),
            ..ProviderSpec::default()
        };
        assert_eq!(
            of(ProviderKind::OpenaiCompatible).gen_ai_system(&deepseek),
            "deepseek"
        );
    }
}
