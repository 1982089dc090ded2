//! The `opentelemetry` feature: an event appended without a traceparent
//! takes the current OpenTelemetry span's, when the log was opened with
//! [`crate::Options::traceparent_from_context`].
//!
//! OpenTelemetry keeps the current context in a thread-local, so it is
//! read in the appending thread, while the batch is encoded there
//! (`log.rs`, `encode_batch`), never on the writer thread. It is read once
//! per batch, not per event: a batch is encoded by one call in one thread,
//! so all its events are under the same span. Without the feature, or with
//! the option off, nothing is read and nothing is stored.

use crate::{Event, Options};

/// The traceparent to store for the events of `events` that carry none:
/// with the feature and [`Options::traceparent_from_context`], the current
/// OpenTelemetry span's (`None` outside any valid span); otherwise `None`.
/// An event's own traceparent always wins (the caller applies it first).
#[cfg(feature = "opentelemetry")]
pub(crate) fn context_traceparent(options: &Options, events: &[Event]) -> Option<String> {
    if !options.traceparent_from_context || events.iter().all(|e| e.traceparent.is_some()) {
        return None;
    }
    current_traceparent()
}

/// Without the `opentelemetry` feature there is no context to read.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
pub(crate) fn context_traceparent(_options: &Options, _events: &[Event]) -> Option<String> {
    None
}

/// The W3C `traceparent` of the calling thread's current OpenTelemetry
/// span, if its span context is valid (non-zero trace and span ids): a
/// span of the application's tracer, or a remote parent a propagator
/// attached.
#[cfg(feature = "opentelemetry")]
fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    // map_current borrows the context instead of cloning it (a clone is a
    // few reference-count updates).
    opentelemetry::Context::map_current(|context| {
        let span = context.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| traceparent_of(span_context))
    })
}

/// `00-<trace id>-<span id>-<flags>`: version 00 of W3C trace context,
/// the ids as 32 and 16 lowercase hex digits (zero-padded, from their
/// bytes rather than from how the crate chooses to display them) and the
/// trace flags byte as 2.
#[cfg(feature = "opentelemetry")]
fn traceparent_of(span_context: &opentelemetry::trace::SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        u128::from_be_bytes(span_context.trace_id().to_bytes()),
        u64::from_be_bytes(span_context.span_id().to_bytes()),
        span_context.trace_flags().to_u8()
    )
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;

    fn remote(trace_id: u128, span_id: u64, flags: TraceFlags) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            flags,
            true,
            TraceState::default(),
        )
    }

    // A remote parent (what a propagator attaches for an incoming request)
    // gives the W3C form with zero-padded ids and its own flags, which
    // evlog's own validation accepts.
    #[test]
    fn current_traceparent_is_w3c_of_the_attached_span_context() {
        let cases = [
            (
                remote(
                    0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                    0x00f0_67aa_0ba9_02b7,
                    TraceFlags::SAMPLED,
                ),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                remote(1, 2, TraceFlags::NOT_SAMPLED),
                "00-00000000000000000000000000000001-0000000000000002-00",
            ),
        ];
        for (span_context, expected) in cases {
            let _attached = Context::new()
                .with_remote_span_context(span_context)
                .attach();
            let got = current_traceparent();
            assert_eq!(got.as_deref(), Some(expected));
            crate::validate_traceparent(expected).unwrap();
        }
        // Detached again: no span.
        assert_eq!(current_traceparent(), None);
    }

    // A context whose span context is invalid (zero ids) gives none.
    #[test]
    fn invalid_span_context_gives_no_traceparent() {
        let _attached = Context::new()
            .with_remote_span_context(SpanContext::empty_context())
            .attach();
        assert_eq!(current_traceparent(), None);
    }

    // The option decides, and a batch whose events all carry their own
    // traceparent does not read the context.
    #[test]
    fn context_is_read_only_when_asked_and_needed() {
        let _attached = Context::new()
            .with_remote_span_context(remote(7, 8, TraceFlags::SAMPLED))
            .attach();
        let bare = [Event::new("a")];
        assert_eq!(context_traceparent(&Options::default(), &bare), None);
        let on = Options::default().traceparent_from_context(true);
        assert_eq!(
            context_traceparent(&on, &bare).as_deref(),
            Some("00-00000000000000000000000000000007-0000000000000008-01")
        );
        let all_own =
            [Event::new("a")
                .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
        assert_eq!(context_traceparent(&on, &all_own), None);
    }
}
