//! Feature `opentelemetry` with `Options::traceparent_from_context`: an
//! event appended without a traceparent inside a real OpenTelemetry span
//! (the SDK's tracer provider, with no exporter: nothing leaves the
//! process) is stored with that span's W3C traceparent; an explicit one
//! is kept; outside any span, in another thread, or with the option off,
//! nothing is added.

use evlog::{Event, Log, Options};
use opentelemetry::trace::{SpanContext, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::common::*;

const EXPLICIT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn tracer(sampler: Sampler) -> SdkTracer {
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .build()
        .tracer("evlog-suite")
}

/// The traceparent the test expects for a span, spelled from the
/// crate's own display of the ids (evlog writes them from their bytes).
fn w3c(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

fn traced_options() -> Options {
    Options::default().traceparent_from_context(true)
}

// Inside a sampled span, `append` and `append_batch` store the span's
// trace id, span id and flags; a nested span gives its own span id; the
// value is on disk (read back after a reopen).
#[test]
fn otel_event_in_span_takes_the_spans_traceparent() {
    let dir = tempdir();
    let tracer = tracer(Sampler::AlwaysOn);
    let (outer, inner, seqs) = {
        let log = Log::open(dir.path(), traced_options()).unwrap();
        let result = tracer.in_span("checkout", |cx| {
            let outer = cx.span().span_context().clone();
            let mut seqs = vec![log.append(Event::new("order.placed")).unwrap()];
            seqs.extend(
                log.append_batch(&[Event::new("order.line"), Event::new("order.line")])
                    .unwrap(),
            );
            let (inner, inner_seq) = tracer.in_span("payment", |cx| {
                let inner = cx.span().span_context().clone();
                (inner, log.append(Event::new("payment.taken")).unwrap())
            });
            seqs.push(inner_seq);
            (outer, inner, seqs)
        });
        log.close().unwrap();
        result
    };
    assert!(outer.is_sampled() && outer.is_valid());
    assert_eq!(inner.trace_id(), outer.trace_id());
    assert_ne!(inner.span_id(), outer.span_id());
    let log = Log::open(dir.path(), traced_options()).unwrap();
    let stored: Vec<_> = seqs
        .iter()
        .map(|&seq| log.get(seq).unwrap().traceparent)
        .collect();
    let expected_outer = w3c(&outer);
    assert!(expected_outer.ends_with("-01"), "{expected_outer}");
    assert_eq!(
        stored,
        vec![
            Some(expected_outer.clone()),
            Some(expected_outer.clone()),
            Some(expected_outer),
            Some(w3c(&inner)),
        ]
    );
}

// A span the sampler drops still has valid ids: its events carry them
// with flags 00, as the W3C header of a request in that span would.
#[test]
fn otel_unsampled_span_gives_flags_00() {
    let log = Log::open_temporary(traced_options()).unwrap();
    let (span, seq) = tracer(Sampler::AlwaysOff).in_span("dropped", |cx| {
        let span = cx.span().span_context().clone();
        (span, log.append(Event::new("a.b")).unwrap())
    });
    assert!(span.is_valid() && !span.is_sampled());
    let stored = log.get(seq).unwrap().traceparent.unwrap();
    assert_eq!(stored, w3c(&span));
    assert!(stored.ends_with("-00"), "{stored}");
}

// An explicit traceparent is kept as given, inside a span too, also
// beside events of the same batch that take the span's.
#[test]
fn otel_explicit_traceparent_is_never_replaced() {
    let log = Log::open_temporary(traced_options()).unwrap();
    let (span, seqs) = tracer(Sampler::AlwaysOn).in_span("op", |cx| {
        let span = cx.span().span_context().clone();
        let mut seqs = vec![log.append(Event::new("a.b").traceparent(EXPLICIT)).unwrap()];
        seqs.extend(
            log.append_batch(&[Event::new("a.c"), Event::new("a.d").traceparent(EXPLICIT)])
                .unwrap(),
        );
        (span, seqs)
    });
    let stored: Vec<_> = seqs
        .iter()
        .map(|&seq| log.get(seq).unwrap().traceparent)
        .collect();
    assert_eq!(
        stored,
        vec![
            Some(EXPLICIT.to_string()),
            Some(w3c(&span)),
            Some(EXPLICIT.to_string()),
        ]
    );
}

// Outside any span there is nothing to take: before, after, and in another
// thread while this one is inside a span (the context is per thread).
#[test]
fn otel_outside_any_span_gives_none() {
    let log = Log::open_temporary(traced_options()).unwrap();
    let tracer = tracer(Sampler::AlwaysOn);
    let before = log.append(Event::new("a.b")).unwrap();
    let (inside, other_thread) = tracer.in_span("op", |_| {
        let inside = log.append(Event::new("a.b")).unwrap();
        let other_thread = std::thread::scope(|s| {
            s.spawn(|| log.append(Event::new("a.b")).unwrap())
                .join()
                .unwrap()
        });
        (inside, other_thread)
    });
    let after = log.append(Event::new("a.b")).unwrap();
    assert!(log.get(inside).unwrap().traceparent.is_some());
    for seq in [before, other_thread, after] {
        assert_eq!(log.get(seq).unwrap().traceparent, None, "seq {seq}");
    }
}

// The feature alone changes nothing: without the option, events appended
// inside a span carry no traceparent.
#[test]
fn otel_context_is_ignored_unless_the_option_is_on() {
    assert!(!Options::default().get_traceparent_from_context());
    let log = Log::open_temporary(Options::default()).unwrap();
    let seq = tracer(Sampler::AlwaysOn).in_span("op", |_| log.append(Event::new("a.b")).unwrap());
    assert_eq!(log.get(seq).unwrap().traceparent, None);
}
