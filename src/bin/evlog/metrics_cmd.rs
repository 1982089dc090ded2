//! `evlog metrics`: the log's figures from a read-only view, as a table,
//! one JSON object, or Prometheus text.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use evlog::metrics::{Histogram, Metrics};

#[derive(clap::Args)]
#[group(multiple = false)]
pub struct MetricsArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// The Prometheus text exposition format (the `evlog_*` metrics of
    /// `evlog::metrics`), for a textfile collector or a scrape.
    #[arg(long)]
    prometheus: bool,
}

pub fn run(view: &evlog::LogReader, args: &MetricsArgs) -> Result<ExitCode> {
    let metrics = view.metrics()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.prometheus {
        write!(out, "{}", metrics.render())?;
    } else if args.json {
        writeln!(out, "{}", to_json(&metrics))?;
    } else {
        write_table(&mut out, &metrics)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn histogram_json(histogram: &Histogram) -> serde_json::Value {
    serde_json::json!({
        "bounds": histogram.bounds,
        "counts": histogram.counts,
        "sum": histogram.sum,
        "count": histogram.count,
    })
}

/// The snapshot as one JSON object; field names follow `Metrics`.
fn to_json(metrics: &Metrics) -> serde_json::Value {
    let appends = metrics.appends.as_ref().map(|a| {
        serde_json::json!({
            "events_appended": a.events_appended,
            "bytes_appended": a.bytes_appended,
            "commit_groups": a.commit_groups,
            "commit_group_events": histogram_json(&a.commit_group_events),
            "fsync_duration_us": histogram_json(&a.fsync_duration_us),
            "segment_rolls": a.segment_rolls,
            "queue_requests": a.queue_requests,
            "queue_capacity_requests": a.queue_capacity_requests,
        })
    });
    let consumers: Vec<serde_json::Value> = metrics
        .consumers
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "position": c.position, "lag": c.lag}))
        .collect();
    let disk = &metrics.disk;
    let recovery = &metrics.recovery;
    serde_json::json!({
        "first_seq": metrics.first_seq,
        "last_seq": metrics.last_seq,
        "durable_seq": metrics.durable_seq,
        "segments": metrics.segment_count,
        "archives": metrics.archive_count,
        "index_available": metrics.index.available,
        "index_lag_events": metrics.index_lag_events,
        "archive_lag_segments": metrics.archive_lag_segments,
        "archive_lag_bytes": metrics.archive_lag_bytes,
        "consumers": consumers,
        "appends": appends,
        "disk_bytes": {
            "segments": disk.segment_bytes,
            "sequence_indexes": disk.sequence_index_bytes,
            "archives": disk.archive_bytes,
            "secondary_indexes": disk.secondary_index_bytes,
            "lost_found": disk.lost_found_bytes,
            "consumers": disk.consumer_bytes,
            "total": disk.total_bytes(),
        },
        "recovery": {
            "closed_cleanly": recovery.closed_cleanly,
            "torn_tail_bytes": recovery.torn_tail_bytes,
            "records_dropped": recovery.records_dropped,
            "indexes_rebuilt": recovery.indexes_rebuilt,
            "damaged_segments": recovery.damaged_segments,
        },
    })
}

fn write_table(out: &mut impl Write, metrics: &Metrics) -> std::io::Result<()> {
    let events = if metrics.last_seq >= metrics.first_seq && metrics.last_seq > 0 {
        metrics.last_seq - metrics.first_seq + 1
    } else {
        0
    };
    writeln!(
        out,
        "events             {events} (seq {}..={})",
        metrics.first_seq, metrics.last_seq
    )?;
    writeln!(
        out,
        "files              {} segment(s), {} archive(s)",
        metrics.segment_count, metrics.archive_count
    )?;
    writeln!(
        out,
        "index lag          {} events{}",
        metrics.index_lag_events,
        if metrics.index.available {
            ""
        } else {
            " (indexes not usable by this view: queries scan)"
        }
    )?;
    writeln!(
        out,
        "archive lag        {} sealed segment(s), {} bytes not archived",
        metrics.archive_lag_segments, metrics.archive_lag_bytes
    )?;
    for consumer in &metrics.consumers {
        writeln!(
            out,
            "consumer lag       {}: {} events (at seq {})",
            consumer.name, consumer.lag, consumer.position
        )?;
    }
    let disk = &metrics.disk;
    writeln!(
        out,
        "disk bytes         {} total: segments {}, sequence indexes {}, archives {}, secondary indexes {}, lost+found {}, consumers {}",
        disk.total_bytes(),
        disk.segment_bytes,
        disk.sequence_index_bytes,
        disk.archive_bytes,
        disk.secondary_index_bytes,
        disk.lost_found_bytes,
        disk.consumer_bytes
    )?;
    let recovery = &metrics.recovery;
    writeln!(
        out,
        "last open          {}; torn tail {} bytes, {} records dropped, {} indexes rebuilt, {} damaged segments",
        if recovery.closed_cleanly {
            "after a clean close"
        } else {
            "after a crash or while the writer runs"
        },
        recovery.torn_tail_bytes,
        recovery.records_dropped,
        recovery.indexes_rebuilt,
        recovery.damaged_segments
    )?;
    // A read-only view has no writer: what it counts (events appended,
    // fsyncs, commit groups) is only in the writer's `Log::metrics`.
    writeln!(
        out,
        "appends, fsyncs    counted by the writer's process only (Log::metrics there, or its /metrics)"
    )?;
    Ok(())
}
