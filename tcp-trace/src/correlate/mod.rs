//! Correlator (events → connections).
