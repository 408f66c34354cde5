//! Metric names, labels and the HTTP responder (no privilege needed).
