//! Indexes over the log. Every index is derived data: it can be rebuilt
//! from the segments, so losing one never loses an event.

pub(crate) mod seq;
