//! Running the service: binding (loopback unless a token guards it), bearer-token auth,
//! the tower-http layers (body limit, timeout, concurrency, compression, request ids,
//! tracing), and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;

use crate::AppState;

/// How the service runs (`[serve]` in `toolgraph.toml`, `TOOLGRAPH_SERVE_*`, flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The bearer token every request must carry, when set.
    pub token: Option<String>,
}

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Serves `state` until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.bind,
            source,
        })?;
    axum::serve(listener, crate::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.bind,
            source,
        })
}
