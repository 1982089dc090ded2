//! Which records `evlog-dump` prints or counts: the conditions of its
//! filter flags, checked against each decoded event.

use uuid::Uuid;

use crate::event::{type_matches, LoggedEvent};

/// The conditions of `evlog-dump`'s filter flags; a record passes when it
/// meets every condition given (an empty selection passes everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Dotted type patterns ([`crate::type_matches`]): any of them.
    pub type_patterns: Vec<String>,
    /// Events of this correlation id.
    pub correlation_id: Option<Uuid>,
    /// Entity type and id.
    pub entity: Option<(String, String)>,
    /// Timestamps at or after this, µs since the epoch (inclusive).
    pub since_us: Option<i64>,
    /// Timestamps before this, µs since the epoch (exclusive).
    pub until_us: Option<i64>,
    /// Sequence numbers from this one (inclusive).
    pub from_seq: Option<u64>,
    /// Sequence numbers up to this one (inclusive).
    pub to_seq: Option<u64>,
}

impl Selection {
    /// Whether any condition is given.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    /// Whether the sequence-number range admits `seq` (checked before a
    /// body is decoded, so that records out of range cost nothing more).
    pub fn admits_seq(&self, seq: u64) -> bool {
        self.from_seq.is_none_or(|from| seq >= from) && self.to_seq.is_none_or(|to| seq <= to)
    }

    /// Whether every record after `seq` is out of the range (a walk in
    /// sequence order can stop there).
    pub fn is_past(&self, seq: u64) -> bool {
        self.to_seq.is_some_and(|to| seq > to)
    }

    /// Whether the conditions that need no event body are all absent:
    /// then a record whose body does not decode can still be judged.
    pub fn needs_event(&self) -> bool {
        !self.type_patterns.is_empty()
            || self.correlation_id.is_some()
            || self.entity.is_some()
            || self.since_us.is_some()
            || self.until_us.is_some()
    }

    /// Whether `event` meets every condition.
    pub fn admits(&self, event: &LoggedEvent) -> bool {
        self.admits_seq(event.seq)
            && (self.type_patterns.is_empty()
                || self
                    .type_patterns
                    .iter()
                    .any(|pattern| type_matches(pattern, &event.event_type)))
            && self
                .correlation_id
                .is_none_or(|id| event.correlation_id == Some(id))
            && self.entity.as_ref().is_none_or(|(entity_type, entity_id)| {
                event.entity.as_ref().is_some_and(|entity| {
                    entity.entity_type == *entity_type && entity.entity_id == *entity_id
                })
            })
            && self
                .since_us
                .is_none_or(|since| event.timestamp_us >= since)
            && self.until_us.is_none_or(|until| event.timestamp_us < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Entity, Payload, Priority};

    fn event(seq: u64, event_type: &str, timestamp_us: i64) -> LoggedEvent {
        LoggedEvent {
            seq,
            id: Uuid::from_u128(u128::from(seq)),
            event_type: event_type.into(),
            timestamp_us,
            correlation_id: Some(Uuid::from_u128(7)),
            causation_id: None,
            entity: Some(Entity {
                entity_type: "task".into(),
                entity_id: "T-1".into(),
            }),
            actor: None,
            session: None,
            priority: Priority::P2,
            traceparent: None,
            metadata: Default::default(),
            payload: Payload::Empty,
        }
    }

    #[test]
    fn selection_checks_every_condition() {
        let e = event(5, "validation.phase.completed", 1_000);
        assert!(Selection::default().admits(&e));
        let by_type = Selection {
            type_patterns: vec!["contract.*".into(), "validation.*".into()],
            ..Default::default()
        };
        assert!(by_type.admits(&e));
        let other_type = Selection {
            type_patterns: vec!["validation.phase".into()],
            ..Default::default()
        };
        assert!(!other_type.admits(&e));
        let window = Selection {
            since_us: Some(1_000),
            until_us: Some(1_001),
            ..Default::default()
        };
        assert!(window.admits(&e));
        let until_excludes = Selection {
            until_us: Some(1_000),
            ..Default::default()
        };
        assert!(!until_excludes.admits(&e));
        let seqs = Selection {
            from_seq: Some(5),
            to_seq: Some(5),
            ..Default::default()
        };
        assert!(seqs.admits(&e) && !seqs.admits_seq(6) && seqs.is_past(6));
        let entity = Selection {
            entity: Some(("task".into(), "T-2".into())),
            ..Default::default()
        };
        assert!(!entity.admits(&e));
        let correlation = Selection {
            correlation_id: Some(Uuid::from_u128(7)),
            entity: Some(("task".into(), "T-1".into())),
            ..Default::default()
        };
        assert!(correlation.admits(&e) && correlation.needs_event());
    }
}
