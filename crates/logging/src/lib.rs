//! Tracing setup shared by the binaries: human-readable by default, JSON on request, and
//! optionally the `job`, `round` and `phase` spans exported to an OpenTelemetry collector over
//! OTLP/gRPC (the `otlp` feature and `--otlp-endpoint`, both described in `docs/metrics.md`).
//!
//! What the spans are and when they open is decided where the work happens (the
//! coordinator's `spans.rs`, the node's task loop); this crate only routes them. Metrics are
//! `veil-metrics`, not OpenTelemetry.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The span names Veil opens for its work, and the only spans exported over OTLP: one per
/// job, per training or analysis round and per phase on the coordinator, and one per task a
/// node computes. Library spans (tonic, hyper, burn) stay out of the collector.
pub const EXPORTED_SPANS: &[&str] = &["job", "round", "phase", "task"];

/// Where a binary's logs and spans go.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// One JSON object per line instead of human-readable lines.
    pub json: bool,
    /// The log level when `RUST_LOG` is not set.
    pub default_level: String,
    /// An OTLP/gRPC collector (`http://host:4317`) to export spans to; none by default.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the exported spans carry (`veil-coordinator`, `veil-client-node`).
    pub service_name: String,
}

/// Why logging could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `--otlp-endpoint` was given to a binary built without the `otlp` feature.
    #[error(
        "--otlp-endpoint {endpoint}: this binary was built without the `otlp` feature; rebuild \
         with default features to export spans"
    )]
    OtlpNotBuiltIn {
        /// The endpoint asked for.
        endpoint: String,
    },
    /// The collector's address is not a plain `http://host:port` URL.
    #[error("--otlp-endpoint {endpoint}: {reason}")]
    OtlpEndpoint {
        /// The endpoint asked for.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("the OTLP span exporter for {endpoint} could not be built: {reason}")]
    OtlpExporter {
        /// The endpoint asked for.
        endpoint: String,
        /// The exporter's own message.
        reason: String,
    },
}

/// Keeps span export running; dropping it sends the spans still buffered (for at most
/// [`FLUSH_DEADLINE`](LoggingGuard::FLUSH_DEADLINE)) and stops the exporter.
#[must_use = "dropping the guard stops span export"]
pub struct LoggingGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl LoggingGuard {
    /// How long dropping the guard waits for the collector to take the last spans: a
    /// collector that is down must not hold up a node's or the coordinator's exit.
    pub const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            otlp::shut_down(provider);
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level.
pub fn init(json: bool) {
    init_with_default(json, "info");
}

/// Like [`init`] with another default level (the demo keeps its screen for
/// the progress bar and shows only warnings).
pub fn init_with_default(json: bool, default_level: &str) {
    let settings = LogSettings {
        json,
        default_level: default_level.to_owned(),
        otlp_endpoint: None,
        service_name: String::new(),
    };
    // Without an endpoint nothing can fail, and the guard has nothing to flush.
    let _ = install(&settings);
}

/// Installs the global subscriber as `settings` say. With an OTLP endpoint, call it inside
/// the tokio runtime (the exporter's connection lives there) and keep the guard until exit.
/// A second installation (tests starting several servers) keeps the first subscriber.
pub fn install(settings: &LogSettings) -> Result<LoggingGuard, LoggingError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&settings.default_level));
    let console = if settings.json {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_filter(filter)
            .boxed()
    };
    let Some(endpoint) = &settings.otlp_endpoint else {
        let _ = tracing_subscriber::registry().with(console).try_init();
        return Ok(LoggingGuard {
            #[cfg(feature = "otlp")]
            provider: None,
        });
    };
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = otlp::layer(endpoint, &settings.service_name)?;
        let _ = tracing_subscriber::registry()
            .with(console)
            .with(layer)
            .try_init();
        Ok(LoggingGuard {
            provider: Some(provider),
        })
    }
    #[cfg(not(feature = "otlp"))]
    Err(LoggingError::OtlpNotBuiltIn {
        endpoint: endpoint.clone(),
    })
}

/// Whether OTLP export decides to take this span or event: Veil's own spans, and the log
/// events (info and above) inside them, which become the spans' events.
pub fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    if *metadata.level() > tracing::Level::INFO {
        return false;
    }
    !metadata.is_span() || EXPORTED_SPANS.contains(&metadata.name())
}

/// Checks a collector address: `http://` with a host and port. TLS to the collector is not
/// built in (the federation's TLS stack is rustls with its own certificates, and tonic's
/// TLS features are not compiled), so spans go in plaintext to a collector on the same host
/// or a trusted network, as the usual sidecar collector is deployed.
pub fn check_otlp_endpoint(endpoint: &str) -> Result<(), LoggingError> {
    let invalid = |reason| LoggingError::OtlpEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if endpoint.starts_with("https://") {
        return Err(invalid(
            "TLS to the collector is not supported: run a collector on this host or a trusted \
             network and give its http:// address",
        ));
    }
    let Some(authority) = endpoint.strip_prefix("http://") else {
        return Err(invalid("expected http://host:port"));
    };
    let authority = authority.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid("expected http://host:port")),
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    //! The OpenTelemetry pipeline: a batch span processor on its own thread, exporting over
    //! tonic to the collector.

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::registry::LookupSpan;

    use super::{LoggingError, LoggingGuard, check_otlp_endpoint, exported};

    /// How long one export may take before the batch is dropped: a slow collector costs
    /// spans, never the round.
    const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    pub(super) fn layer<S>(
        endpoint: &str,
        service_name: &str,
    ) -> Result<(impl Layer<S>, SdkTracerProvider), LoggingError>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        check_otlp_endpoint(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| LoggingError::OtlpExporter {
                endpoint: endpoint.to_owned(),
                reason: error.to_string(),
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("veil");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(exported));
        Ok((layer, provider))
    }

    /// Flushes and stops the provider. The batch processor's thread hands spans to the
    /// exporter's connection task on the tokio runtime, so on a runtime worker the wait
    /// must let the runtime's other workers run.
    pub(super) fn shut_down(provider: SdkTracerProvider) {
        let flush = move || {
            let _ = provider.shutdown_with_timeout(LoggingGuard::FLUSH_DEADLINE);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush)
            }
            _ => flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_addresses_are_plain_http_with_a_port() {
        assert!(check_otlp_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_otlp_endpoint("http://collector.internal:4317/").is_ok());
        for (endpoint, reason) in [
            ("https://collector:4317", "TLS"),
            ("collector:4317", "http://host:port"),
            ("http://collector", "http://host:port"),
            ("http://:4317", "http://host:port"),
            ("http://collector:port", "http://host:port"),
        ] {
            let error = check_otlp_endpoint(endpoint)
                .expect_err(endpoint)
                .to_string();
            assert!(error.contains(endpoint), "{error}");
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn only_veils_spans_and_the_events_in_them_are_exported() {
        // A subscriber that enables everything, so the spans are real and carry their
        // callsites' metadata.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let metadata = |span: tracing::Span| span.metadata().expect("an enabled span");
            assert!(exported(metadata(tracing::info_span!("job"))));
            assert!(exported(metadata(tracing::warn_span!("phase"))));
            assert!(!exported(metadata(tracing::info_span!("h2_stream"))));
            assert!(!exported(metadata(tracing::debug_span!("phase"))));
        });
    }
}
