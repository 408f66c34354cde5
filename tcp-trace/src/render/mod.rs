//! Renderers: events, connections, ladder diagrams, JSON lines, summary.
pub mod conns;
pub mod ladder;
pub mod summary;
