//! OpenTelemetry export: toolgraph's spans sent over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The `opentelemetry-otlp` exporter reads the standard variables itself: the endpoints,
//! `OTEL_EXPORTER_OTLP_HEADERS` (and `…_TRACES_HEADERS`), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`), `OTEL_EXPORTER_OTLP_TIMEOUT`; the
//! resource reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, and the service is
//! `toolgraph` when none is named. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! turn export off.
//!
//! Invariants: a collector that is down never slows or fails a command — spans are batched
//! and sent from the batch processor's own thread, each request is bounded (2 s unless
//! `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise), the final flush is bounded, and a failure
//! is said once per process on standard error. Only toolgraph's own spans are exported
//! (not the HTTP client's, which would trace the exporter itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// Each export request's limit when `OTEL_EXPORTER_OTLP_TIMEOUT` does not set one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the final flush may take before the process exits anyway.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The service name when `OTEL_SERVICE_NAME` names none.
const SERVICE_NAME: &str = "toolgraph";

/// The tracer provider that exports spans, while the process runs.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter the environment (`var`) asks for: `None` when it names no endpoint (or
    /// turns export off); an error, in words, when the exporter cannot be built.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Exporter>, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if disabled {
            return Ok(None);
        }
        // reqwest here is built without a TLS provider of its own: use ring's (an https
        // collector), as the other HTTP clients of the process do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_none()
            && set("OTEL_EXPORTER_OTLP_TIMEOUT").is_none()
        {
            builder = builder.with_timeout(REQUEST_TIMEOUT);
        }
        // Both encodings are built in, and the crate's own default is then JSON: protobuf
        // is the protocol's default, so it is ours unless a variable asks for http/json.
        if set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_none()
            && set("OTEL_EXPORTER_OTLP_PROTOCOL").is_none()
        {
            builder = builder.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        }
        let exporter = builder
            .build()
            .map_err(|e| format!("traces will not be sent to {endpoint}: {e}"))?;
        let resource = if set("OTEL_SERVICE_NAME").is_some() {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name(SERVICE_NAME).build()
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(WarnOnce {
                inner: exporter,
                endpoint,
                warned: AtomicBool::new(false),
            })
            .with_resource(resource)
            .build();
        Ok(Some(Exporter { provider }))
    }

    /// The layer that turns toolgraph's spans into OpenTelemetry spans (info and above,
    /// whatever the log filter).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("toolgraph");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("toolgraph", tracing::Level::INFO))
    }

    /// Sends what is left, for [`FLUSH_TIMEOUT`] at most.
    pub fn shutdown(self) {
        let provider = self.provider;
        let flush = move || {
            let _ = provider.shutdown_with_timeout(FLUSH_TIMEOUT);
        };
        // From the runtime's thread, the wait must not stall other tasks.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush)
            }
            _ => flush(),
        }
    }
}

/// An exporter that says its first failure on standard error, once per process, and
/// stays quiet about later ones (a collector that is down must not flood the terminal).
#[derive(Debug)]
struct WarnOnce<E> {
    inner: E,
    endpoint: String,
    warned: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for WarnOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            crate::out::errln!(
                "toolgraph: warning: sending traces to {} failed ({e}); later failures are not reported",
                self.endpoint
            );
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_or_export_turned_off_means_no_exporter() {
        let none = |_: &str| None;
        assert!(matches!(Exporter::from_env(none), Ok(None)));
        let off = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".to_owned()),
            "OTEL_SDK_DISABLED" => Some("true".to_owned()),
            _ => None,
        };
        assert!(matches!(Exporter::from_env(off), Ok(None)));
    }
}
