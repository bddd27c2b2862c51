//! rmcp's errors in plain words: what failed and why, without the transport's Rust type
//! (`Transport [rmcp::transport::worker::WorkerTransport<…>] error: Client error: …`).
//!
//! The callers put the server's name and the operation (spawn, initialize, tools/list, a
//! tool call) around these texts. Pure formatting: no I/O; never panics.

use std::error::Error;

use rmcp::service::{ClientInitializeError, ServiceError};
use rmcp::transport::DynamicTransportError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

/// Why the `initialize` handshake failed.
pub(crate) fn initialize(e: &ClientInitializeError) -> String {
    match e {
        ClientInitializeError::TransportError { error, .. } => transport(error),
        ClientInitializeError::ConnectionClosed(_) => {
            "connection closed before the server answered".into()
        }
        ClientInitializeError::JsonRpcError(data) => {
            format!(
                "the server refused: {} (code {})",
                data.message, data.code.0
            )
        }
        ClientInitializeError::LegacyFallbackFailed { discover, .. } => initialize(discover),
        other => other.to_string(),
    }
}

/// Why a request (`tools/list`, `tools/call`) failed.
pub(crate) fn service(e: &ServiceError) -> String {
    match e {
        ServiceError::TransportSend(error) => transport(error),
        ServiceError::TransportClosed => "the connection is closed".into(),
        ServiceError::McpError(data) => {
            format!(
                "the server refused: {} (code {})",
                data.message, data.code.0
            )
        }
        ServiceError::Timeout { timeout } => {
            format!("no answer within {:.1} s", timeout.as_secs_f64())
        }
        ServiceError::Cancelled { reason } => match reason {
            Some(reason) => format!("cancelled: {reason}"),
            None => "cancelled".into(),
        },
        other => other.to_string(),
    }
}

/// What the transport said, without its type name: for HTTP, whether the server could not
/// be reached (and the OS's reason) or what it answered; otherwise the error's own chain.
pub(crate) fn transport(e: &DynamicTransportError) -> String {
    let inner: &(dyn Error + 'static) = e.error.as_ref();
    if let Some(http) = inner.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return match http {
            StreamableHttpError::Client(e) => http_client(e),
            StreamableHttpError::HttpStatus(status) => {
                format!("the server answered HTTP {}", status.status)
            }
            StreamableHttpError::AuthRequired(_) => {
                "the server requires authorization (HTTP 401): set `bearer_token`".into()
            }
            StreamableHttpError::InsufficientScope(_) => {
                "the server refused the token (HTTP 403: insufficient scope)".into()
            }
            other => chain(other),
        };
    }
    chain(inner)
}

/// A reqwest failure: unreachable, timed out, or the chain of causes.
fn http_client(e: &reqwest::Error) -> String {
    let url = e.url().map(|u| u.as_str().to_owned()).unwrap_or_default();
    let root = root_cause(e);
    if e.is_connect() {
        format!("cannot connect to {url}: {root}")
    } else if e.is_timeout() {
        format!("no answer from {url} in time")
    } else if let Some(status) = e.status() {
        format!("{url} answered HTTP {status}")
    } else {
        chain(e)
    }
}

/// The innermost cause's text (`Connection refused (os error 111)`).
fn root_cause(e: &(dyn Error + 'static)) -> String {
    let mut at = e;
    while let Some(next) = at.source() {
        at = next;
    }
    at.to_string()
}

/// The error and its causes on one line, each said once (many messages already include
/// their source's text).
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut at = Some(e);
    while let Some(error) = at {
        let part = error.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        at = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_error_reads_without_type_names() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let e = DynamicTransportError::from_parts(
            "rmcp::transport::worker::WorkerTransport<Something<Else>>",
            std::any::TypeId::of::<()>(),
            Box::new(io),
        );
        assert_eq!(transport(&e), "broken pipe");
        let text = service(&ServiceError::TransportSend(e));
        assert_eq!(text, "broken pipe");
        assert_eq!(
            service(&ServiceError::TransportClosed),
            "the connection is closed"
        );
    }

    #[test]
    fn causes_already_in_a_message_are_said_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "sending failed: {}", self.0)
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("reset by peer"));
        assert_eq!(chain(&e), "sending failed: reset by peer");
        assert_eq!(root_cause(&e), "reset by peer");
    }
}
