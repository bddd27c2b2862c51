//! [`LlmError`]: why a model turn (or the whole loop) failed.
//!
//! Every variant says what went wrong in words a user can act on; nothing here panics.

/// Why a request to a model failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The configuration cannot work (bad URL, bad header value).
    #[error("invalid LLM configuration: {0}")]
    Config(String),
    /// No API key for a server that is not on this machine: the request would be refused.
    #[error(
        "no API key for {provider} at {base_url}: set {variable} (or `api_key` in the `[llm]` \
         section, or TOOLGRAPH_LLM_API_KEY); a server that needs none takes `api_key = \"\"`"
    )]
    MissingApiKey {
        /// The provider.
        provider: crate::Provider,
        /// The server.
        base_url: String,
        /// The variable that holds the key (`OPENAI_API_KEY`).
        variable: String,
    },
    /// The request could not be sent or its body not read (connection, timeout).
    #[error("request to {url} failed: {message}")]
    Transport {
        /// The endpoint.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The server answered with an error status (after any retries).
    #[error("{url} answered HTTP {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error message from the body (or the body itself).
        message: String,
    },
    /// The server answered with something that is not the protocol.
    #[error("unexpected response from the model server: {0}")]
    Protocol(String),
    /// A reply, or a part of it, is larger than the configuration allows.
    #[error("{what} from {url} exceeds {setting} ({limit} bytes)")]
    TooLarge {
        /// The endpoint.
        url: String,
        /// What was too large (`the reply body`, `a stream event`).
        what: &'static str,
        /// The configuration field that sets the limit (`max_event_bytes`).
        setting: &'static str,
        /// The limit, in bytes.
        limit: usize,
    },
}
