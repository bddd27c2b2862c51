//! `shell` (being written).
